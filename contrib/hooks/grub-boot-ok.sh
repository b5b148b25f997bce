#!/bin/sh
# grub-boot-ok.sh: confirm the booted slot to GRUB (fota-boot-ok.service runs it once the
# system is up): clears fota_pending and fota_trying, so GRUB keeps booting this slot.
# Does nothing when no trial is pending. GRUBENV=FILE as in grub-switch-slot.sh.
set -eu
env=${GRUBENV:-/boot/grub/grubenv}
[ -f "$env" ] || exit 0
grub-editenv "$env" list | grep -qE '^fota_(pending|trying)=1$' || exit 0
grub-editenv "$env" unset fota_pending fota_trying
echo "grub-boot-ok: slot $(grub-editenv "$env" list | sed -n 's/^fota_slot=//p') confirmed"
