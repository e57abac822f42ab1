# Shared by the .ci/ scripts (sourced, not run).

# Installs the Debian package of each command that is missing, in one apt-get:
#   install_missing COMMAND=PACKAGE ...
# A COMMAND with a '/' is a path that must be executable (`time` is also a shell
# keyword, so `command -v time` says nothing of /usr/bin/time).
install_missing() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
    done
    ((${#missing[@]})) || return 0
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
}
