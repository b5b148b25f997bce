#!/bin/sh
# active-slot.sh: fota-agent's [device] active_slot_command: print the slot the running
# system booted from, a or b.
#
#   active_slot_command = /usr/lib/fota/hooks/active-slot.sh
#
# The answer must be the slot that is *running*, not the one the bootloader will boot
# next: between a slot switch and the reboot they differ, and a job started then must
# still treat the running slot as its source. So it reads the kernel command line, where
# the bootloader states the slot it booted (contrib/bootloader/: fota.slot=a|b), and
# falls back to root=PARTLABEL=..._a|_b. It prints nothing and exits 1 when neither is
# there (fota-agent then exits 12 and writes nothing).
# FOTA_CMDLINE=FILE reads another file than /proc/cmdline (tests).
set -eu
cmdline=$(cat "${FOTA_CMDLINE:-/proc/cmdline}")
for w in $cmdline; do
  case $w in
    fota.slot=a | fota.slot=b) echo "${w#fota.slot=}"; exit 0 ;;
  esac
done
for w in $cmdline; do
  case $w in
    root=PARTLABEL=*_a) echo a; exit 0 ;;
    root=PARTLABEL=*_b) echo b; exit 0 ;;
  esac
done
echo "active-slot: no fota.slot= or root=PARTLABEL=*_a|_b on the kernel command line" >&2
exit 1
