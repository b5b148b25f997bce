#!/bin/sh
# uboot-switch-slot.sh: fota-agent's [device] switch_command for U-Boot devices.
#
#   switch_command = /usr/lib/fota/hooks/uboot-switch-slot.sh
#
# fota-agent runs it (with /bin/sh -c) after the new slot is written and its SHA-256
# verified, with FOTA_SLOT (a or b: the new slot), FOTA_SLOT_PATH, FOTA_PKG_NAME and
# FOTA_PKG_VERSION in the environment. Exit 0: the next boot tries the new slot; any
# other exit: fota-agent exits 12 and `resume` runs this again, so it must be idempotent.
#
# It sets, in the U-Boot environment (fw_setenv, /etc/fw_env.config; a redundant
# environment makes each write atomic):
#   fota_prev_slot  the slot to fall back to (the running one)
#   bootcount=0, upgrade_available=1   U-Boot's boot counting: with CONFIG_BOOTCOUNT_LIMIT,
#                   after bootlimit failed boots U-Boot runs altbootcmd (fall back)
#   fota_slot       the slot to boot, written last: a power cut before it leaves the
#                   device booting the old slot, and resume runs this hook again
# contrib/bootloader/uboot-env.txt shows the U-Boot side (bootcmd, altbootcmd);
# uboot-boot-ok.sh confirms the slot once the new system is up.
#
# FW_ENV_CONFIG=FILE uses another fw_env.config (tests use a file-backed environment).
set -eu
case ${FOTA_SLOT:-} in a | b) ;; *) echo "uboot-switch-slot: FOTA_SLOT must be a or b" >&2; exit 2 ;; esac
set -- ${FW_ENV_CONFIG:+-c "$FW_ENV_CONFIG"}
cur=$(fw_printenv "$@" -n fota_slot 2>/dev/null || true)
case $cur in a | b) ;; *) cur=a ;; esac
# Already switched: a rerun after a cut between the last write and fota-agent's journal
# (possibly from the new slot itself, when the cut came before the reboot finished the
# job): the trial state is left as it is.
[ "$cur" = "$FOTA_SLOT" ] && exit 0
fw_setenv "$@" fota_prev_slot "$cur"
fw_setenv "$@" bootcount 0
fw_setenv "$@" upgrade_available 1
fw_setenv "$@" fota_slot "$FOTA_SLOT"
[ "$(fw_printenv "$@" -n fota_slot)" = "$FOTA_SLOT" ] || { echo "uboot-switch-slot: fota_slot did not read back as $FOTA_SLOT" >&2; exit 1; }
echo "uboot-switch-slot: next boot tries slot $FOTA_SLOT (${FOTA_PKG_NAME:-?} ${FOTA_PKG_VERSION:-?}), fallback slot $cur"
