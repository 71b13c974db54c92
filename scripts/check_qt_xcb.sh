#!/usr/bin/env bash
# Checks that Qt's xcb platform plugin (what opens a window on an X11 desktop) finds its system
# libraries, and installs the missing ones with apt-get when run as root on Debian/Ubuntu;
# otherwise (or when the install fails) prints the exact command and exits 1, so that
# scripts/setup_env.sh stops there instead of the app aborting later. A fresh Debian lacks
# libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1 and more, and the app then aborts with
# 'could not load the Qt platform plugin "xcb"' although `import PySide6.QtGui` works.
#
# Usage: scripts/check_qt_xcb.sh VENV   (called by scripts/setup_env.sh)
set -euo pipefail

venv="$1"
plugin="$("$venv/bin/python" -c 'import pathlib, PySide6; print(pathlib.Path(PySide6.__file__).parent / "Qt/plugins/platforms/libqxcb.so")' 2>/dev/null || true)"
if [[ ! -f "$plugin" ]] || ! command -v ldd >/dev/null; then
    exit 0  # not Linux/X11 (macOS, Windows): Qt uses another platform plugin
fi

missing_libraries() {
    ldd "$plugin" 2>/dev/null | awk '/=> not found/ {print $1}' | sort -u
}

# Debian names a library's package after its soname: libxcb-icccm.so.4 -> libxcb-icccm4,
# libxkbcommon-x11.so.0 -> libxkbcommon-x11-0 (a dash when the name ends in a digit).
debian_package() {
    local name="${1%%.so.*}" version="${1##*.so.}"
    name="$(echo "$name" | tr '[:upper:]' '[:lower:]')"
    [[ "$name" =~ [0-9]$ ]] && echo "$name-$version" || echo "$name$version"
}

missing="$(missing_libraries)"
[[ -z "$missing" ]] && exit 0
packages="$(for library in $missing; do debian_package "$library"; done | sort -u | tr '\n' ' ')"
if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    echo "hcviewer: installing the libraries of Qt's xcb plugin: $packages" >&2
    apt-get update -qq && apt-get install -y -qq $packages >/dev/null || true
    missing="$(missing_libraries)"
    [[ -z "$missing" ]] && exit 0
fi
echo "hcviewer: Qt's xcb platform plugin cannot load, so the app cannot open a window on an X11" \
     "desktop; missing:" $missing >&2
if command -v apt-get >/dev/null; then
    echo "hcviewer: install them with: sudo apt-get install $packages" >&2
else
    echo "hcviewer: install these libraries (Debian names: $packages) with your package manager" >&2
fi
echo "hcviewer: then run scripts/setup_env.sh again" >&2
exit 1
