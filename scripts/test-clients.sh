#!/usr/bin/env bash
# scripts/test-clients.sh — installs the real VNC clients the display tests drive (test/harness/vnc-clients.ts,
# test/harness/browser.ts) on a Debian 12 (bookworm) host:
#   gvncviewer       gvnccapture: one-shot PNG capture, the pixel-exact oracle (gtk-vnc 1.3.1)
#   tigervnc-viewer  xtigervncviewer 1.12 (Tight/JPEG, ContinuousUpdates, Fence, ExtendedDesktopSize)
#   xvfb             a private X server for the viewer; its screen is read from Xvfb -fbdir (XWD file)
#   x11-utils        xwininfo: where the viewer window is on that screen
#   chromium         headless Chromium for noVNC, driven by playwright-core (npm; downloads no browser)
#   bsdutils         script(1): a pty so gvnccapture can read a password (Essential: normally present)
#
# Idempotent: when everything is installed it prints one summary line and touches nothing. Otherwise it runs
# `apt-get install -y --no-install-recommends` (and `apt-get update` first only if a package has no install
# candidate, or after a failed install, e.g. stale lists). Needs root (or passwordless sudo) only then.
# Exit status: 0 when every program is present afterwards.
set -Eeuo pipefail
export LC_ALL=C

PKGS=(gvncviewer tigervnc-viewer xvfb x11-utils chromium bsdutils)
# program -> package (what the harnesses run)
PROGS=(gvnccapture:gvncviewer xtigervncviewer:tigervnc-viewer Xvfb:xvfb xwininfo:x11-utils chromium:chromium script:bsdutils)

log() { printf 'test-clients: %s\n' "$*"; }
die() { printf 'test-clients: ERROR: %s\n' "$*" >&2; exit 1; }

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }
summary() {
  local p out=''
  for p in gvncviewer tigervnc-viewer xvfb chromium; do out+="${out:+, }$p $(version "$p")"; done
  echo "$out"
}

command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
  die "not a Debian/Ubuntu host (no dpkg/apt-get): install gtk-vnc's gvnccapture, TigerVNC's xtigervncviewer, Xvfb, xwininfo and chromium (/usr/bin/chromium, or set CHROMIUM_PATH) by hand"

missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  log "ok: $(summary)"
  exit 0
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null && sudo -n true 2>/dev/null ||
    die "missing packages ${missing[*]}; run this script as root (or with passwordless sudo): apt-get install --no-install-recommends ${missing[*]}"
  SUDO=(sudo -n)
fi

T0=$(date +%s)
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" apt-get -q -y -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)

apt_update() {
  log "apt-get update"
  "${APT[@]}" update >>"$LOG" 2>&1 || { tail -20 "$LOG" >&2; die "apt-get update failed"; }
}
need_update=0
for p in "${missing[@]}"; do
  cand=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p')
  if [ -z "$cand" ] || [ "$cand" = '(none)' ]; then need_update=1; fi
done
[ $need_update = 1 ] && apt_update

log "installing ${missing[*]} (--no-install-recommends)"
install() { "${APT[@]}" install --no-install-recommends "${missing[@]}" >>"$LOG" 2>&1; }
if ! install; then
  if [ $need_update = 0 ]; then
    log "install failed (stale package lists?); retrying after apt-get update"
    apt_update
    install || { tail -30 "$LOG" >&2; die "apt-get install ${missing[*]} failed"; }
  else
    tail -30 "$LOG" >&2
    die "apt-get install ${missing[*]} failed"
  fi
fi
fetched=$(sed -n 's/^Fetched \([^ ]* [^ ]*\) in .*/\1/p' "$LOG" | tail -1)
newly=$(grep -c '^Setting up ' "$LOG" || true)

for pp in "${PROGS[@]}"; do
  prog=${pp%%:*}
  command -v "$prog" >/dev/null || die "$prog (package ${pp#*:}) is still missing after the install"
done
log "installed ${missing[*]}: $newly packages set up, ${fetched:-0 B} downloaded, $(($(date +%s) - T0))s"
log "ok: $(summary)"
