#!/bin/sh
# uboot-boot-ok.sh: confirm the booted slot to U-Boot (fota-boot-ok.service runs it once
# the system is up). Clears upgrade_available and bootcount, so U-Boot stops counting
# boots and never falls back from this slot. Does nothing when no trial is pending.
# FW_ENV_CONFIG=FILE uses another fw_env.config.
set -eu
set -- ${FW_ENV_CONFIG:+-c "$FW_ENV_CONFIG"}
[ "$(fw_printenv "$@" -n upgrade_available 2>/dev/null || true)" = 1 ] || exit 0
fw_setenv "$@" upgrade_available 0
fw_setenv "$@" bootcount 0
echo "uboot-boot-ok: slot $(fw_printenv "$@" -n fota_slot 2>/dev/null || echo '?') confirmed"
