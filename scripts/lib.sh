# shellcheck shell=bash
# What scripts/setup, scripts/setup-dist and scripts/setup-runners share,
# sourced after `set -euo pipefail`: Debian packages installed with at most
# one `apt-get update` per run, the CI rule, and exit-time cleanup.

# The sourcing script's name, for its messages.
script=${0##*/}

# CI=true (or 1): a missing prerequisite is an error, not a warning.
is_ci() { [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; }

# Commands run when the script exits, in the order given (`on_exit rm -rf
# "$dir"`: the arguments as they are now): one EXIT trap for the script and
# this file, so neither replaces the other's.
exit_cmds=()
on_exit() { exit_cmds+=("$(printf '%q ' "$@")"); }
run_exit_cmds() {
    local c
    for c in "${exit_cmds[@]}"; do
        eval "$c"
    done
}
trap run_exit_cmds EXIT

# One `apt-get update` per run. The first script of a run to source this
# (scripts/setup, which runs the other two) makes a directory for the run
# and exports it; the first install that needs an update leaves a mark in
# it, which every script of the run sees; the first script removes it.
if [[ -z "${RINIT_SETUP_RUN:-}" ]]; then
    RINIT_SETUP_RUN=$(mktemp -d "${TMPDIR:-/tmp}/rinit-setup.XXXXXX")
    export RINIT_SETUP_RUN
    on_exit rm -rf "$RINIT_SETUP_RUN"
fi

# Every apt-get waits for another apt's lock (a machine's unattended
# upgrades, a parallel setup) instead of failing at once.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }

# `apt-get update`, unless a script of this run did it already.
apt_update_once() {
    [[ -e "$RINIT_SETUP_RUN/apt-updated" ]] && return 0
    apt_get update -qq || return
    : >"$RINIT_SETUP_RUN/apt-updated"
}

# Installs those of the packages given that are missing (options, such as
# --no-install-recommends, go to apt-get install). Nothing is downloaded when
# all are there. A package with a service (nginx, redis-server) must not
# start it: a system nginx on 0.0.0.0:80 or Redis on 6379 would take what
# the tests bind. So a policy-rc.d denies every start for the install, when
# no policy is in place already.
apt_policy=""
remove_apt_policy() {
    [[ -z "$apt_policy" ]] || rm -f "$apt_policy"
    apt_policy=""
}
on_exit remove_apt_policy
apt_install() {
    local opts=() missing=() p
    for p in "$@"; do
        if [[ "$p" == -* ]]; then
            opts+=("$p")
        elif ! dpkg -s "$p" >/dev/null 2>&1; then
            missing+=("$p")
        fi
    done
    ((${#missing[@]})) || return 0
    echo "$script: installing ${missing[*]}"
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        apt_policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$apt_policy"
        chmod 755 "$apt_policy"
    fi
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq "${opts[@]}" "${missing[@]}" >/dev/null
    remove_apt_policy
}
