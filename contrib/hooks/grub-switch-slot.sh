#!/bin/sh
# grub-switch-slot.sh: fota-agent's [device] switch_command for GRUB devices.
#
#   switch_command = /usr/lib/fota/hooks/grub-switch-slot.sh
#
# fota-agent runs it (with /bin/sh -c) after the new slot is written and its SHA-256
# verified, with FOTA_SLOT (a or b: the new slot), FOTA_SLOT_PATH, FOTA_PKG_NAME and
# FOTA_PKG_VERSION in the environment. Exit 0: the next boot tries the new slot; any
# other exit: fota-agent exits 12 and `resume` runs this again, so it is idempotent.
#
# It writes, with one grub-editenv call (one rewrite of the 1 KiB environment block),
#   fota_slot=NEW  fota_prev_slot=OLD  fota_pending=1
# and clears fota_trying. contrib/bootloader/grub-fota.cfg reads them: a pending slot is
# booted once on trial (fota_trying=1); if the system does not confirm it
# (grub-boot-ok.sh clears fota_trying), the next boot falls back to fota_prev_slot.
#
# GRUBENV=FILE: the environment block (default /boot/grub/grubenv). It must be on a file
# system GRUB can write (not LVM, RAID, btrfs or an encrypted volume).
set -eu
case ${FOTA_SLOT:-} in a | b) ;; *) echo "grub-switch-slot: FOTA_SLOT must be a or b" >&2; exit 2 ;; esac
env=${GRUBENV:-/boot/grub/grubenv}
[ -f "$env" ] || grub-editenv "$env" create
cur=$(grub-editenv "$env" list | sed -n 's/^fota_slot=//p')
case $cur in a | b) ;; *) cur=a ;; esac
# Already switched: a rerun after a cut between the write and fota-agent's journal
# (possibly from the new slot itself): the trial state is left as it is.
[ "$cur" = "$FOTA_SLOT" ] && exit 0
grub-editenv "$env" set "fota_slot=$FOTA_SLOT" "fota_prev_slot=$cur" fota_pending=1 fota_trying=
[ "$(grub-editenv "$env" list | sed -n 's/^fota_slot=//p')" = "$FOTA_SLOT" ] ||
  { echo "grub-switch-slot: fota_slot did not read back as $FOTA_SLOT" >&2; exit 1; }
echo "grub-switch-slot: next boot tries slot $FOTA_SLOT (${FOTA_PKG_NAME:-?} ${FOTA_PKG_VERSION:-?}), fallback slot $cur"
