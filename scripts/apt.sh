# Sourced by the setup scripts: apt_ensure PKG... installs the Debian
# packages that are missing, and nothing when all are present.
apt_ensure() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
  if ((${#missing[@]})); then
    printf '\033[1mkerntap setup:\033[0m installing %s\n' "${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
