#!/usr/bin/env bash
# Makes sure the RabbitMQ broker and the PostgreSQL database that telerelay's services and tests
# talk to are installed, running and accepting our credentials, then hands their URLs over:
#
#   source scripts/ensure-services.sh     # exports the variables below into the current shell
#   eval "$(scripts/ensure-services.sh)"  # the same, from a child process
#   scripts/ensure-services.sh            # prints the `export ...` lines; messages go to stderr
#
# Exported: TELERELAY_AMQP_URL, TELERELAY_DATABASE_URL and DATABASE_URL (the name sqlx's macros
# and #[sqlx::test] read; always equal to TELERELAY_DATABASE_URL).
#
# By default both servers are local (127.0.0.1) and use fixed development credentials. What is
# missing is installed from the distribution's packages (Debian or Ubuntu), started without
# assuming systemd (containers and CI runners often have none), and waited for with a deadline.
# Installing and starting need root; without it the script prints exactly what to run.
#
# Overrides: TELERELAY_AMQP_URL / TELERELAY_DATABASE_URL, when set to a server on another host
# (or port), are only checked: an AMQP login for amqp://, a TCP connection for amqps:// (bash
# cannot speak TLS), pg_isready for PostgreSQL. Nothing is installed or started for them, and
# their values are never printed, since they may carry real passwords.
# ENSURE_SERVICES_TIMEOUT (seconds, default 120) bounds each wait for a server to come up.
#
# Idempotent, and fast when everything is up (two probes, ~0.2 s): the fast path
# never calls rabbitmqctl or rabbitmq-diagnostics, because each call boots an Erlang VM (~1 s).

if (return 0 2>/dev/null); then
    # Sourced. The work runs in a child bash so that `set -euo pipefail`, `exit` and the helper
    # functions below never leak into the caller's shell; the child prints `export ...` lines,
    # evaluated here. The overrides are passed explicitly because the caller may have set them
    # without exporting them.
    if __telerelay_exports=$(
        TELERELAY_AMQP_URL="${TELERELAY_AMQP_URL-}" \
            TELERELAY_DATABASE_URL="${TELERELAY_DATABASE_URL-}" \
            bash "${BASH_SOURCE[0]}"
    ); then
        eval "$__telerelay_exports"
        unset __telerelay_exports
        return 0
    fi
    unset __telerelay_exports
    return 1
fi

set -euo pipefail

readonly DEFAULT_AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f'
readonly DEFAULT_DATABASE_URL='postgres://telerelay:telerelay@127.0.0.1:5432/telerelay'
readonly TIMEOUT=${ENSURE_SERVICES_TIMEOUT:-120}
readonly SELF=${BASH_SOURCE[0]}

# The servers' tools live in sbin, which a non-root PATH often lacks.
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

say() { printf 'ensure-services: %s\n' "$*" >&2; }
die() {
    say "$@"
    exit 1
}

is_root() { [[ $EUID -eq 0 ]]; }

# systemd is only usable when it is PID 1; in containers `systemctl` may exist without it.
systemd_is_pid1() { [[ "$(cat /proc/1/comm 2>/dev/null)" == systemd ]]; }

# Prints what to run as root, then stops: a non-root user must decide to grant it.
need_root() {
    local why=$1
    shift
    say "$why; that needs root. Run:"
    local line
    for line in "$@"; do
        printf '    %s\n' "$line" >&2
    done
    say "or let this script do all of it: sudo $SELF"
    exit 1
}

# Files to delete on exit, and the temporary policy-rc.d when this script wrote it.
TEMP_FILES=()
POLICY_RC_D_WRITTEN=''
cleanup() {
    if [[ -n $POLICY_RC_D_WRITTEN ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [[ ${#TEMP_FILES[@]} -gt 0 ]]; then
        rm -f "${TEMP_FILES[@]}"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# ---------------------------------------------------------------------------------------------
# URLs

# parse_url URL: sets URL_SCHEME, URL_USER, URL_PASS (still percent-encoded), URL_HOST, URL_PORT
# (empty when absent) and URL_PATH.
parse_url() {
    local url=$1 rest authority hostport userinfo=''
    [[ $url == *://* ]] || die "not a URL: ${url%%:*}:..."
    URL_SCHEME=${url%%://*}
    rest=${url#*://}
    authority=${rest%%[/?#]*}
    URL_PATH=${rest#"$authority"}
    URL_PATH=${URL_PATH%%[?#]*}
    hostport=$authority
    if [[ $authority == *@* ]]; then
        userinfo=${authority%@*}
        hostport=${authority##*@}
    fi
    URL_USER=${userinfo%%:*}
    URL_PASS=''
    if [[ $userinfo == *:* ]]; then
        URL_PASS=${userinfo#*:}
    fi
    URL_PORT=''
    if [[ $hostport == \[* ]]; then
        URL_HOST=${hostport%%]*}
        URL_HOST=${URL_HOST#[}
        if [[ $hostport == *]:* ]]; then
            URL_PORT=${hostport##*]:}
        fi
    else
        URL_HOST=${hostport%%:*}
        if [[ $hostport == *:* ]]; then
            URL_PORT=${hostport##*:}
        fi
    fi
}

percent_decode() {
    local s=${1//\\/\\\\}
    printf '%b' "${s//%/\\x}"
}

# The servers this script may install and start are the ones on this machine's loopback, on the
# standard ports; anything else belongs to someone else and is only checked.
is_loopback() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

# Host and port only: URLs may carry passwords, which must not reach logs.
where() { printf '%s:%s' "$1" "$2"; }

# Reachability of someone else's server: a TCP connection, nothing more (works for TLS too).
tcp_open() {
    # shellcheck disable=SC2016 # $1 and $2 are the inner bash's arguments
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"' tcp-probe "$1" "$2" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# AMQP probe: a real AMQP 0-9-1 handshake in bash, so "up" means the broker accepted these
# credentials on this vhost, exactly as the services will need. It ends with a clean
# connection.close, which keeps the broker's log quiet: a bare protocol-header probe logs a
# warning ("client unexpectedly closed TCP connection") on every run.

hex_of() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
# AMQP field encodings, built as hex text because bash strings cannot hold NUL bytes.
shortstr() {
    local h
    h=$(hex_of "$1")
    printf '%02x%s' $((${#h} / 2)) "$h"
}
longstr_hex() { printf '%08x%s' $((${#1} / 2)) "$1"; }
table_hex() { printf '%08x%s' $((${#1} / 2)) "$1"; }
# A method frame on channel 0: type 1, channel 0, payload size, payload, frame-end 0xCE.
method_frame() { printf '010000%08x%sce' $((${#1} / 2)) "$1"; }

# amqp_exchange HOST PORT BYTES (as \xHH escapes): runs in a child bash. Sends the client's
# frames, then prints the broker's frames as spaced hex (" 01 00 00 ... ce ") until the broker
# confirms the close. The broker does not hang up after close-ok (the client must), so reading
# to end-of-file would stall; frames are read one at a time instead. head -c never reads past
# the count it is given, so no byte of the next frame is lost.
amqp_exchange() {
    exec 3<>"/dev/tcp/$1/$2" || exit 2
    printf '%b' "$3" >&3
    local hdr body h
    while true; do
        hdr=$(head -c 7 <&3 | od -An -v -tx1 | tr -s ' \n' ' ')
        read -r -a h <<<"$hdr"
        if [[ ${#h[@]} -lt 7 ]]; then
            printf '%s' "$hdr"
            return 0
        fi
        # Frame header: type, channel (2 bytes), payload size (4 bytes); then payload and 0xCE.
        body=$(head -c $((16#${h[3]}${h[4]}${h[5]}${h[6]} + 1)) <&3 | od -An -v -tx1 | tr -s ' \n' ' ')
        printf '%s%s' "${hdr% }" "$body"
        case $body in
        ' 00 0a 00 33 '*) return 0 ;; # connection.close-ok: done, hang up
        ' 00 0a 00 32 '*)
            # The broker closes (e.g. login refused): confirm with close-ok, then hang up.
            printf '%b' '\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\xce' >&3
            return 0
            ;;
        esac
    done
}

AMQP_PROBE_ERROR=''
# amqp_probe HOST PORT USER PASSWORD VHOST
# Returns 0 when the connection opened, 2 when nothing listens, 1 otherwise (AMQP_PROBE_ERROR).
amqp_probe() {
    local host=$1 port=$2 user=$3 pass=$4 vhost=$5
    local props start_ok tune_ok open close bytes reply rc=0
    # authentication_failure_close: a refused login is answered with a reason, not a hang-up.
    props=$(shortstr connection_name)53$(longstr_hex "$(hex_of 'telerelay ensure-services')")
    props+=$(shortstr capabilities)46$(table_hex "$(shortstr authentication_failure_close)7401")
    # connection.start-ok (10,11): client properties, mechanism PLAIN, "\0user\0password", locale.
    start_ok=000a000b$(table_hex "$props")$(shortstr PLAIN)
    start_ok+=$(longstr_hex "00$(hex_of "$user")00$(hex_of "$pass")")$(shortstr en_US)
    # connection.tune-ok (10,31): channel-max 1 and frame-max 4096 are the smallest values a
    # broker must accept (RabbitMQ refuses 0 when it has a limit); heartbeat off.
    tune_ok=000a001f0001000010000000
    # connection.open (10,40): vhost, reserved shortstr, reserved bit.
    open=000a0028$(shortstr "$vhost")0000
    # connection.close (10,50): 200 reply-success, empty text, no failing method.
    close=000a003200c80000000000
    # The client frames are sent in one go: the broker reads them in order, so waiting for each
    # reply first would only add round trips.
    bytes=414d515000000901$(method_frame "$start_ok")$(method_frame "$tune_ok")
    bytes+=$(method_frame "$open")$(method_frame "$close")
    # The socket lives in a child bash so that `timeout` bounds connect, send and receive.
    # shellcheck disable=SC2001 # sed splits the hex into pairs, which ${//} cannot
    reply=$(timeout 5 bash -c "$(declare -f amqp_exchange); amqp_exchange \"\$@\"" amqp-probe \
        "$host" "$port" "$(sed 's/../\\x&/g' <<<"$bytes")" 2>/dev/null) || rc=$?
    if [[ $rc -eq 2 ]]; then
        return 2
    fi
    reply=" ${reply# } "
    local open_ok=' 01 00 00( [0-9a-f]{2}){4} 00 0a 00 29 '
    local refused=' 00 0a 00 32 ([0-9a-f]{2}) ([0-9a-f]{2}) ([0-9a-f]{2})(( [0-9a-f]{2})*)'
    if [[ $reply =~ $open_ok ]]; then
        return 0
    elif [[ $reply =~ $refused ]]; then
        local code=$((16#${BASH_REMATCH[1]}${BASH_REMATCH[2]})) len=$((16#${BASH_REMATCH[3]}))
        local text=${BASH_REMATCH[4]:0:len*3}
        AMQP_PROBE_ERROR="refused the connection: $code $(printf '%b' "${text// /\\x}")"
    elif [[ $rc -eq 124 ]]; then
        AMQP_PROBE_ERROR="accepted a TCP connection but did not finish the AMQP handshake in 5 s"
    elif [[ $reply == ' 41 4d 51 50 '* ]]; then
        AMQP_PROBE_ERROR="does not speak AMQP 0-9-1 (it answered with another protocol header)"
    elif [[ $reply == ' 01 00 00 '* ]]; then
        AMQP_PROBE_ERROR="closed the connection during the handshake"
    else
        AMQP_PROBE_ERROR="is not an AMQP 0-9-1 broker"
    fi
    return 1
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL probes

PG_ERROR=''
# pg_login URL: can we log in and run a query? (Also checks the password and pg_hba.conf.)
pg_login() {
    command -v psql >/dev/null || {
        PG_ERROR='psql is not installed'
        return 1
    }
    PG_ERROR=$(PGCONNECT_TIMEOUT=5 psql -X -q -w -At -d "$1" -c 'select 1' 2>&1 >/dev/null) && return 0
    PG_ERROR=${PG_ERROR//$'\n'/ }
    return 1
}

# pg_status HOST PORT: 0 accepting connections, 1 starting up (rejecting), 2 nothing answers.
pg_status() {
    if command -v pg_isready >/dev/null; then
        local rc=0
        pg_isready -q -h "$1" -p "$2" -t 5 || rc=$?
        case $rc in
        0 | 1) return "$rc" ;;
        *) return 2 ;;
        esac
    fi
    tcp_open "$1" "$2" || return 2
}

# ---------------------------------------------------------------------------------------------
# Packages

postgres_server_installed() {
    command -v pg_ctlcluster >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

install_packages() {
    [[ $# -gt 0 ]] || return 0
    if ! command -v apt-get >/dev/null; then
        die "missing: $*. This script installs them only on Debian or Ubuntu (apt-get); install them with your package manager, start them, and run it again."
    fi
    # Package maintainer scripts try to start what they install (invoke-rc.d). Without an init
    # system that start can fail and leave the package half-configured, and with one it races
    # our own start. A policy-rc.d answering 101 ("action forbidden") makes invoke-rc.d and
    # deb-systemd-invoke skip the start and succeed; we start the servers ourselves below.
    # An existing policy-rc.d (Docker images ship one) is left as it is.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        POLICY_RC_D_WRITTEN=1
        printf '#!/bin/sh\n# Temporary, written by telerelay scripts/ensure-services.sh.\nexit 101\n' \
            >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
    fi
    say "installing $* (apt-get; this takes a minute) ..."
    apt-get update -q || die "apt-get update failed; see above"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
        die "apt-get install $* failed; see above"
    if [[ -n $POLICY_RC_D_WRITTEN ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_D_WRITTEN=''
    fi
}

# run_daemon_start LOG COMMAND...: a start command whose children may outlive us. All of its
# descriptors go to a log file: a daemon that inherits our stdout or stderr would keep open the
# pipe of the caller's $(...) or of CI's log capture, and the caller would hang until it exits.
run_daemon_start() {
    local log=$1
    shift
    "$@" </dev/null >"$log" 2>&1
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ

# RabbitMQ names its node rabbit@<short host name> and must resolve that name. Fresh containers
# and VMs sometimes cannot; the node then dies at boot with "nxdomain". Only for a broker
# installed by this run (an existing node keeps its data under its current name), pin the node
# name to localhost in that case.
pin_rabbitmq_nodename_if_unresolvable() {
    local short env_conf=/etc/rabbitmq/rabbitmq-env.conf
    short=$(uname -n)
    short=${short%%.*}
    if getent hosts "$short" >/dev/null; then
        return 0
    fi
    if [[ -f $env_conf ]] && grep -q -E '^[[:space:]]*(RABBITMQ_)?NODENAME=' "$env_conf"; then
        return 0
    fi
    say "host name '$short' does not resolve; setting NODENAME=rabbit@localhost in $env_conf"
    printf '%s\n' \
        "# Added by telerelay scripts/ensure-services.sh: the host name '$short' did not resolve." \
        'NODENAME=rabbit@localhost' >>"$env_conf"
}

rabbitmq_log_hint() {
    say "RabbitMQ's own logs are in /var/log/rabbitmq/ (and 'journalctl -u rabbitmq-server' under systemd)."
}

beam_running() {
    local comm
    for comm in /proc/[0-9]*/comm; do
        if [[ "$(cat "$comm" 2>/dev/null)" == beam.smp ]]; then
            return 0
        fi
    done
    return 1
}

start_rabbitmq() {
    local log
    log=$(mktemp)
    TEMP_FILES+=("$log")
    say "starting RabbitMQ ..."
    if systemd_is_pid1; then
        # The unit is Type=notify: this returns once the broker has booted, or fails.
        if ! run_daemon_start "$log" systemctl start rabbitmq-server.service; then
            sed 's/^/    /' "$log" >&2
            rabbitmq_log_hint
            die "systemctl start rabbitmq-server failed"
        fi
    else
        # Debian's wrapper switches to the rabbitmq user; -detached returns at once and the
        # node boots in the background, so we wait for it below.
        if ! run_daemon_start "$log" rabbitmq-server -detached; then
            sed 's/^/    /' "$log" >&2
            rabbitmq_log_hint
            die "rabbitmq-server -detached failed"
        fi
    fi
}

wait_for_rabbitmq() {
    local host=$1 port=$2 user=$3 pass=$4 vhost=$5 deadline=$((SECONDS + TIMEOUT)) rc
    local early_check=$((SECONDS + 15))
    while true; do
        rc=0
        amqp_probe "$host" "$port" "$user" "$pass" "$vhost" || rc=$?
        case $rc in
        0) return 0 ;;
        1) die "RabbitMQ at $(where "$host" "$port") $AMQP_PROBE_ERROR" ;;
        esac
        # Without systemd nobody tells us the node died during boot; rather than wait out the
        # whole deadline, notice that no Erlang VM is left.
        if ! systemd_is_pid1 && ((SECONDS >= early_check)) && ! beam_running; then
            rabbitmq_log_hint
            die "RabbitMQ stopped while booting (no Erlang VM is running)"
        fi
        if ((SECONDS >= deadline)); then
            rabbitmq_log_hint
            die "RabbitMQ did not accept connections on $(where "$host" "$port") within ${TIMEOUT} s"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# Prints "VERSION CLUSTER" for the cluster configured on port 5432, creating the standard one
# when the machine has none at all.
postgres_cluster() {
    local found version
    found=$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }')
    if [[ -n $found ]]; then
        printf '%s\n' "$found"
        return 0
    fi
    if [[ -n "$(pg_lsclusters -h 2>/dev/null)" ]]; then
        die "PostgreSQL clusters exist but none uses port 5432 (see pg_lsclusters); point TELERELAY_DATABASE_URL at yours"
    fi
    version=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' |
        awk -F/ '{ print $5 }' | sort -n | tail -n 1)
    [[ -n $version ]] || die "no PostgreSQL server binary under /usr/lib/postgresql"
    say "creating PostgreSQL cluster $version/main on port 5432 ..."
    pg_createcluster --port 5432 "$version" main >&2
    printf '%s main\n' "$version"
}

start_postgres() {
    local cluster version name log
    cluster=$(postgres_cluster)
    version=${cluster% *}
    name=${cluster#* }
    log=$(mktemp)
    TEMP_FILES+=("$log")
    say "starting PostgreSQL $version/$name ..."
    local start=(pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start)
    if systemd_is_pid1; then
        start=(systemctl start "postgresql@$version-$name.service")
    fi
    if ! run_daemon_start "$log" "${start[@]}"; then
        sed 's/^/    /' "$log" >&2
        die "'${start[*]}' failed; the server log is in /var/log/postgresql/"
    fi
}

wait_for_postgres() {
    local deadline=$((SECONDS + TIMEOUT))
    until pg_status 127.0.0.1 5432; do
        if ((SECONDS >= deadline)); then
            die "PostgreSQL did not accept connections on 127.0.0.1:5432 within ${TIMEOUT} s; see /var/log/postgresql/"
        fi
        sleep 0.5
    done
}

# The role may create databases because #[sqlx::test] creates one per test; it owns its
# database so that migrations can create everything in it (PostgreSQL 15 no longer lets any
# user create in the public schema). Re-running is harmless: ALTER heals a changed password or
# owner.
readonly PROVISION_SQL="
SELECT 'CREATE ROLE telerelay' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'telerelay')
\\gexec
ALTER ROLE telerelay WITH LOGIN CREATEDB PASSWORD 'telerelay';
SELECT 'CREATE DATABASE telerelay OWNER telerelay'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'telerelay')
\\gexec
ALTER DATABASE telerelay OWNER TO telerelay;
"

# Runs psql as a PostgreSQL superuser: as the postgres OS user over the socket (Debian's default
# peer authentication) when we are root, else as the postgres role over TCP (works where
# 127.0.0.1 is trusted). Returns 1 when neither works.
psql_superuser() {
    if is_root && id -u postgres >/dev/null 2>&1; then
        # cd /: the postgres user may not be allowed into the caller's directory.
        if (cd / && runuser -u postgres -- psql -X -q -w -p 5432 -d postgres -c 'select 1') >/dev/null 2>&1; then
            (cd / && runuser -u postgres -- psql -X -q -w -v ON_ERROR_STOP=1 -p 5432 -d postgres "$@")
            return
        fi
    fi
    if PGCONNECT_TIMEOUT=5 psql -X -q -w -h 127.0.0.1 -p 5432 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
        PGCONNECT_TIMEOUT=5 psql -X -q -w -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres -d postgres "$@"
        return
    fi
    return 1
}

provision_postgres() {
    say "creating PostgreSQL role and database 'telerelay' ..."
    if ! psql_superuser --file=- <<<"$PROVISION_SQL"; then
        local sql="CREATE ROLE telerelay LOGIN CREATEDB PASSWORD 'telerelay'"
        if is_root; then
            die "could not connect to PostgreSQL as a superuser (neither 'runuser -u postgres -- psql' nor 'psql -h 127.0.0.1 -U postgres' worked)"
        fi
        need_root "Creating the PostgreSQL role and database" \
            "sudo -u postgres psql -c \"$sql\"" \
            "sudo -u postgres createdb --owner telerelay telerelay"
    fi
}

# ---------------------------------------------------------------------------------------------

# root_plan AMQP_STATE DB_STATE PACKAGE...: for a user without root, every step that needs it,
# in order, in one message.
root_plan() {
    local amqp_state=$1 db_state=$2
    shift 2
    local steps=() what=() cluster
    if [[ $# -gt 0 ]]; then
        what+=("install $*")
        steps+=("sudo apt-get update"
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $*")
    fi
    if [[ $amqp_state == down ]]; then
        what+=("start RabbitMQ")
        if systemd_is_pid1; then
            steps+=("sudo systemctl start rabbitmq-server")
        else
            steps+=("sudo rabbitmq-server -detached")
        fi
    fi
    if [[ $db_state == down ]]; then
        what+=("start PostgreSQL")
        cluster=$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1 " " $2; exit }' || true)
        if [[ -z $cluster ]]; then
            # Installing the postgresql package creates this cluster; its version depends on
            # the release (15 on Debian 12, 16 on Ubuntu 24.04).
            steps+=("sudo pg_ctlcluster --skip-systemctl-redirect <version shown by pg_lsclusters> main start")
        elif systemd_is_pid1; then
            steps+=("sudo systemctl start postgresql@${cluster% *}-${cluster#* }")
        else
            steps+=("sudo pg_ctlcluster --skip-systemctl-redirect $cluster start")
        fi
    fi
    local joined
    joined=$(printf '%s, ' "${what[@]}")
    need_root "To ${joined%, }" "${steps[@]}" \
        "then run $SELF again (it waits for both and creates the database role)"
}

main() {
    local amqp_url=${TELERELAY_AMQP_URL:-$DEFAULT_AMQP_URL}
    local db_url=${TELERELAY_DATABASE_URL:-$DEFAULT_DATABASE_URL}

    # Which servers are ours to manage?
    parse_url "$amqp_url"
    case $URL_SCHEME in
    amqp) URL_PORT=${URL_PORT:-5672} ;;
    amqps) URL_PORT=${URL_PORT:-5671} ;;
    *) die "TELERELAY_AMQP_URL must start with amqp:// or amqps://" ;;
    esac
    local amqp_scheme=$URL_SCHEME amqp_host=$URL_HOST amqp_port=$URL_PORT amqp_local=''
    if [[ $URL_SCHEME == amqp ]] && is_loopback "$amqp_host" && [[ $amqp_port == 5672 ]]; then
        amqp_local=1
    fi
    # Credentials and vhost as the AMQP URI spec reads them; "amqp://host" means vhost "/".
    local amqp_user amqp_pass amqp_vhost=${URL_PATH#/}
    amqp_user=$(percent_decode "${URL_USER:-guest}")
    amqp_pass=$(percent_decode "${URL_PASS:-guest}")
    if [[ -z $amqp_vhost ]]; then
        amqp_vhost=/
    else
        amqp_vhost=$(percent_decode "$amqp_vhost")
    fi

    parse_url "$db_url"
    case $URL_SCHEME in
    postgres | postgresql) ;;
    *) die "TELERELAY_DATABASE_URL must start with postgres:// or postgresql://" ;;
    esac
    local db_host=$URL_HOST db_port=${URL_PORT:-5432} db_local=''
    if is_loopback "$db_host" && [[ $db_port == 5432 ]]; then
        db_local=1
    fi

    # 1. Probe. Someone else's servers are only checked, and that is all we do for them.
    local amqp_state=ok db_state=ok rc
    if [[ -n $amqp_local ]]; then
        rc=0
        amqp_probe "$amqp_host" "$amqp_port" "$amqp_user" "$amqp_pass" "$amqp_vhost" || rc=$?
        case $rc in
        0) ;;
        2) amqp_state=down ;;
        *)
            # Something answers on the port: starting a second broker would not help.
            die "RabbitMQ at $(where "$amqp_host" "$amqp_port") $AMQP_PROBE_ERROR. Check the credentials and vhost in TELERELAY_AMQP_URL (Debian's broker has guest/guest for loopback connections; see 'rabbitmqctl list_users')."
            ;;
        esac
    elif [[ $amqp_scheme == amqp ]]; then
        # Someone else's plaintext broker: the same login check, but nothing is started for it.
        rc=0
        amqp_probe "$amqp_host" "$amqp_port" "$amqp_user" "$amqp_pass" "$amqp_vhost" || rc=$?
        case $rc in
        0) ;;
        2) die "cannot reach the broker at $(where "$amqp_host" "$amqp_port") (from TELERELAY_AMQP_URL)" ;;
        *) die "the broker at $(where "$amqp_host" "$amqp_port") (from TELERELAY_AMQP_URL) $AMQP_PROBE_ERROR" ;;
        esac
    elif ! tcp_open "$amqp_host" "$amqp_port"; then
        # amqps: bash cannot speak TLS, so reachability is all we can check.
        die "cannot reach the broker at $(where "$amqp_host" "$amqp_port") (from TELERELAY_AMQP_URL)"
    fi

    if [[ -n $db_local ]]; then
        if ! pg_login "$db_url"; then
            rc=0
            pg_status 127.0.0.1 5432 || rc=$?
            case $rc in
            0) db_state=unprovisioned ;;
            1) db_state=starting ;;
            *) db_state=down ;;
            esac
        fi
    else
        rc=0
        if command -v pg_isready >/dev/null; then
            pg_isready -q -d "$db_url" -t 5 || rc=$?
        else
            tcp_open "$db_host" "$db_port" || rc=$?
        fi
        if [[ $rc -ne 0 ]]; then
            die "cannot reach PostgreSQL at $(where "$db_host" "$db_port") (from TELERELAY_DATABASE_URL)"
        fi
    fi

    # 2. Install what is missing, in a single apt-get run.
    local packages=()
    if [[ $amqp_state == down ]] && ! command -v rabbitmq-server >/dev/null; then
        packages+=(rabbitmq-server)
    fi
    if [[ $db_state == down ]] && ! postgres_server_installed; then
        packages+=(postgresql)
    elif [[ $db_state != ok ]] && ! command -v psql >/dev/null; then
        # A server runs (not from Debian's packages, maybe) but we need psql to set it up.
        packages+=(postgresql-client)
    fi
    if ! is_root && [[ ${#packages[@]} -gt 0 || $amqp_state == down || $db_state == down ]]; then
        root_plan "$amqp_state" "$db_state" "${packages[@]}"
    fi
    local fresh_rabbitmq=''
    if [[ " ${packages[*]} " == *' rabbitmq-server '* ]]; then
        fresh_rabbitmq=1
    fi
    install_packages "${packages[@]}"
    if [[ -n $fresh_rabbitmq ]]; then
        pin_rabbitmq_nodename_if_unresolvable
    fi

    # 3. Start both before waiting for either: RabbitMQ boots in the background meanwhile.
    if [[ $amqp_state == down ]]; then
        start_rabbitmq
    fi
    if [[ $db_state == down ]]; then
        start_postgres
    fi

    # 4. Wait, each with a deadline.
    if [[ $db_state == down || $db_state == starting ]]; then
        wait_for_postgres
    fi
    if [[ $amqp_state == down ]]; then
        wait_for_rabbitmq "$amqp_host" "$amqp_port" "$amqp_user" "$amqp_pass" "$amqp_vhost"
        say "RabbitMQ is up on $(where "$amqp_host" "$amqp_port")"
    fi

    # 5. The role and database. Only the default URL is ours to provision; a custom local one
    # names a role the caller manages.
    if [[ -n $db_local && $db_state != ok ]] && ! pg_login "$db_url"; then
        if [[ $db_url != "$DEFAULT_DATABASE_URL" ]]; then
            die "cannot log in with TELERELAY_DATABASE_URL at $(where "$db_host" "$db_port"): $PG_ERROR"
        fi
        provision_postgres
        pg_login "$db_url" ||
            die "still cannot log in as telerelay after creating the role: $PG_ERROR. pg_hba.conf must allow password (scram-sha-256 or md5) logins from 127.0.0.1."
        say "PostgreSQL role and database 'telerelay' are ready"
    fi

    say "RabbitMQ ok at $(where "$amqp_host" "$amqp_port"), PostgreSQL ok at $(where "$db_host" "$db_port")"
    if [[ -n ${DATABASE_URL:-} && $DATABASE_URL != "$db_url" ]]; then
        say "note: DATABASE_URL pointed elsewhere; it now equals TELERELAY_DATABASE_URL"
    fi
}

# The exports, for `eval` or for the sourcing wrapper above. The defaults are fixed local
# development values and are printed; an override is re-exported by name, so its value (and any
# password in it) never appears in output.
print_exports() {
    if [[ ${TELERELAY_AMQP_URL:-$DEFAULT_AMQP_URL} == "$DEFAULT_AMQP_URL" ]]; then
        printf "export TELERELAY_AMQP_URL='%s'\n" "$DEFAULT_AMQP_URL"
    else
        printf 'export TELERELAY_AMQP_URL\n'
    fi
    if [[ ${TELERELAY_DATABASE_URL:-$DEFAULT_DATABASE_URL} == "$DEFAULT_DATABASE_URL" ]]; then
        printf "export TELERELAY_DATABASE_URL='%s'\n" "$DEFAULT_DATABASE_URL"
        printf "export DATABASE_URL='%s'\n" "$DEFAULT_DATABASE_URL"
    else
        printf 'export TELERELAY_DATABASE_URL\n'
        # shellcheck disable=SC2016 # expanded by the shell that evaluates this line
        printf 'export DATABASE_URL="$TELERELAY_DATABASE_URL"\n'
    fi
}

# stdout carries only the export lines: everything else, including what apt-get and the server
# start commands print, goes to stderr, and nothing started here keeps the caller's stdout open.
exec 9>&1 1>&2
main 9>&-
print_exports >&9
