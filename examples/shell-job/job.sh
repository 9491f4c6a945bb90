#!/bin/sh
# The job contract of s3-fargate-jobs (README, "Your own image") in POSIX shell and the AWS CLI.
#
# Reads the object S3_BUCKET and S3_KEY name (the version S3_VERSION_ID names, when set) onto
# the scratch volume and writes <RESULT_PREFIX><S3_KEY>.json with its size, SHA-256 and line
# count. Exit codes mean what they mean for the default job (task/exit_codes.py):
#   0 result written     2 bad settings          3 object missing or access denied
#   5 S3 kept failing    6 processing failed     7 result not written
#   8 ran past TASK_TIMEOUT_SECONDS              143 stopped by SIGTERM (task stop, Spot)
# Every failure is one line on stderr. Your own tool replaces the "Processing" part below.
set -u

PROGRAM=s3-job
MAX_KEY_BYTES=1024          # S3's limit on a key, in UTF-8 bytes
MAX_TIMEOUT_SECONDS=2592000 # 30 days: the longest taskTimeoutMinutes allows
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
child=""    # the command being waited for, which a signal must stop too
work=""     # this run's folder on the scratch volume, removed on exit
deadline="" # when the time limit ends, in epoch seconds, if TASK_TIMEOUT_SECONDS is set
where="s3://${S3_BUCKET:-}/${S3_KEY:-}"

# The job's own stderr, kept as fd 3: a failure met while a command's stderr goes to a file
# (in a trap, or a time limit inside `run`) must still reach the log.
exec 3>&2

# fail CODE REASON ERROR CHECK: one line on stderr, however many lines the CLI printed; then exit.
fail() {
    line="failed (exit $1, $2): $3; check $4"
    printf '%s: %s\n' "$PROGRAM" "$(printf '%s' "$line" | tr '\n\r\t' '   ' | tr -s ' ')" >&3
    exit "$1"
}

stop() {
    if [ -n "$child" ]; then
        kill "$child" 2>/dev/null
        wait "$child" 2>/dev/null
    fi
    fail "$2" "$3" "$1 received while processing $where; stopped, no result written" \
        "whether a person, a deployment or a Spot reclaim stopped the task; upload the object again (or redrive) to process it"
}

timed_out() {
    fail 8 TIMED_OUT \
        "ran longer than its time limit (TASK_TIMEOUT_SECONDS=$TASK_TIMEOUT_SECONDS) on $where; stopped, no result written" \
        "whether the object is larger than usual or the tool slower; raise the stack's taskTimeoutMinutes if the limit is too tight"
}

trap 'stop SIGTERM 143 STOPPED' TERM
trap 'stop SIGINT 130 INTERRUPTED' INT
trap '[ -z "$work" ] || rm -rf "$work"' EXIT

# run COMMAND...: in the background, waited for. A shell runs a trap only once its foreground
# command has ended, so this is what lets SIGTERM stop a long download at once. With a time
# limit the command gets what is left of it (coreutils timeout exits 124 when it fires).
run() {
    if [ -n "$deadline" ]; then
        left=$((deadline - $(date +%s)))
        [ "$left" -gt 0 ] || timed_out
        timeout -k 5 "$left" "$@" 3>&- &
    else
        "$@" 3>&- &
    fi
    child=$!
    wait "$child"
    status=$?
    child=""
    if [ -n "$deadline" ] && [ "$status" -eq 124 ]; then timed_out; fi
    return "$status"
}

# JSON escapes for the 31 control characters but newline (json_string joins lines itself),
# as one sed script of s/CHAR/\u00XX/g commands, built once.
CONTROL_TO_JSON=""
code=1
while [ "$code" -lt 32 ]; do
    if [ "$code" -ne 10 ]; then
        char=$(printf '%b' "\\0$(printf '%03o' "$code")")
        CONTROL_TO_JSON="${CONTROL_TO_JSON}s/${char}/\\\\u00$(printf '%02x' "$code")/g;"
    fi
    code=$((code + 1))
done

# json_string TEXT: TEXT as a JSON string (RFC 8259), whatever bytes an S3 key holds.
json_string() {
    # The "." keeps a final newline, which command substitution would otherwise drop.
    escaped=$(printf '%s.' "$1" | LC_ALL=C sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' \
        -e "$CONTROL_TO_JSON" -e '$!s/$/\\n/' | LC_ALL=C tr -d '\n')
    printf '"%s"' "${escaped%.}"
}

# Settings: every problem reported at once, as the default job does.
problems=""
problem() { problems="${problems:+$problems; }$1"; }

[ -n "${S3_BUCKET:-}" ] || problem "S3_BUCKET is not set: it must hold the name of the bucket the uploaded object is in; the runner Lambda sets it per task"
[ -n "${S3_KEY:-}" ] || problem "S3_KEY is not set: it must hold the uploaded object's key, already URL-decoded; the runner Lambda sets it per task"
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
[ -n "$region" ] || problem "AWS_REGION is not set: it must hold the bucket's region; the task definition sets it"
version=${S3_VERSION_ID:-}
result_prefix=${RESULT_PREFIX-results/}
result_key="$result_prefix${S3_KEY:-}.json"
key_bytes=$(printf '%s' "$result_key" | wc -c)
if [ "$((key_bytes))" -gt "$MAX_KEY_BYTES" ]; then
    problem "the result key RESULT_PREFIX + S3_KEY + '.json' would be $((key_bytes)) bytes, and S3 keys are at most $MAX_KEY_BYTES: shorten RESULT_PREFIX ('$result_prefix')"
fi
# The AWS CLI reads a parameter that starts with file:// or fileb:// from that local file.
for value in "${S3_KEY:-}" "$result_key"; do
    case $value in
        file://* | fileb://*) problem "the key '$value' starts like a local file name to the AWS CLI, which would read that file instead; this job cannot handle it" ;;
    esac
done
limit=${TASK_TIMEOUT_SECONDS:-}
if [ -n "$limit" ]; then
    # Digits without a leading zero (sh arithmetic reads 010 as octal), at most 7 of them.
    case $limit in
        *[!0-9]* | 0*) limit_ok=no ;;
        *) if [ "${#limit}" -le 7 ] && [ "$limit" -le "$MAX_TIMEOUT_SECONDS" ]; then limit_ok=yes; else limit_ok=no; fi ;;
    esac
    if [ "$limit_ok" = yes ]; then
        deadline=$(($(date +%s) + limit))
    else
        problem "TASK_TIMEOUT_SECONDS='$limit' must be a whole number of seconds from 1 to $MAX_TIMEOUT_SECONDS (the infrastructure sets it from taskTimeoutMinutes)"
    fi
fi
[ -z "$problems" ] || fail 2 BAD_SETTINGS "$problems" "the task definition's environment and the runner's container overrides"
[ -z "$version" ] || where="$where (version $version)"

# This run's files go on the scratch volume (TMPDIR), the only writable path.
if ! made=$(mktemp -d "${TMPDIR:-/tmp}/$PROGRAM.XXXXXX" 2>&1); then
    fail 2 BAD_SETTINGS "no folder can be made in TMPDIR='${TMPDIR:-}': $made" \
        "that the image declares VOLUME [\"/scratch\"] on a folder owned by 1000:1000 and TMPDIR points there"
fi
work=$made
object="$work/object"

# The default job's retries (5 attempts) and timeouts (a stalled read fails well inside the 30 s
# Fargate gives a stopped task), unless the environment sets its own.
: "${AWS_RETRY_MODE:=standard}" "${AWS_MAX_ATTEMPTS:=5}"
export AWS_RETRY_MODE AWS_MAX_ATTEMPTS

# Download: one GET, so every byte comes from one version; pinned to S3_VERSION_ID when set.
# Values go as --name=value so a key starting with "-" stays a value.
printf '%s: reading %s\n' "$PROGRAM" "$where"
set -- s3api get-object "--bucket=$S3_BUCKET" "--key=$S3_KEY"
[ -z "$version" ] || set -- "$@" "--version-id=$version"
# `run` needs the command itself, not a shell function: a signal must reach the CLI's process.
if ! run aws --region "$region" --cli-connect-timeout 10 --cli-read-timeout 20 "$@" \
    --query VersionId --output text "$object" >"$work/version" 2>"$work/error"; then
    error=$(cat "$work/error")
    case $error in
        *"Parameter validation failed"*)
            fail 2 BAD_SETTINGS "$where cannot be asked for: $error" \
                "S3_BUCKET, S3_KEY and S3_VERSION_ID as the runner passed them: a bucket name S3 accepts, a version id from S3" ;;
        *"(NoSuchKey)"* | *"(NoSuchVersion)"* | *"(NoSuchBucket)"* | *"(AccessDenied)"* | \
            *"(InvalidArgument)"* | *"(MethodNotAllowed)"* | *"(403)"* | *"(404)"* | *"(405)"*)
            fail 3 OBJECT_UNAVAILABLE "$where cannot be read: $error" \
                "that it still exists (it may have been deleted after the upload) and that the task role allows s3:GetObject and s3:GetObjectVersion on it" ;;
        *)
            fail 5 DOWNLOAD_FAILED "reading $where failed: $error" \
                "S3 throttling (503 SlowDown), the network path to S3 (NAT / VPC endpoint) and the task role's credentials; the task can be retried" ;;
    esac
fi
read -r read_version <"$work/version" || true
case ${read_version:-} in None | null) read_version="" ;; esac # an unversioned bucket
version_id=${version:-${read_version:-}}

# Processing: size, SHA-256 and lines of "$object". Put your tool here; its own temporary
# files belong under "$work" too.
run sha256sum "$object" >"$work/sha256" 2>"$work/error" ||
    fail 6 PROCESSING_FAILED "sha256sum failed on $where: $(cat "$work/error")" "the tool's message in this line"
read -r sha256 _ <"$work/sha256"
run wc -l -c "$object" >"$work/counts" 2>"$work/error" ||
    fail 6 PROCESSING_FAILED "wc failed on $where: $(cat "$work/error")" "the tool's message in this line"
read -r lines size _ <"$work/counts"
# wc -l counts newlines; like the default job, a last line without one is a line too.
newline_at_end=$(tail -c 1 "$object" | wc -l)
if [ "$size" -gt 0 ] && [ "$((newline_at_end))" -eq 0 ]; then lines=$((lines + 1)); fi

if [ -n "$version_id" ]; then version_json=$(json_string "$version_id"); else version_json=null; fi
printf '{"bucket": %s, "key": %s, "versionId": %s, "size": %s, "sha256": "%s", "lines": %s, "startedAt": "%s", "finishedAt": "%s"}\n' \
    "$(json_string "$S3_BUCKET")" "$(json_string "$S3_KEY")" "$version_json" "$size" "$sha256" \
    "$lines" "$started_at" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$work/result.json"

# The whole object is processed: like the default job, let the one small PUT finish rather
# than throw the work away on SIGTERM or the time limit (Fargate kills 30 s after SIGTERM).
trap '' TERM INT
if ! aws --region "$region" --cli-connect-timeout 10 --cli-read-timeout 20 \
    s3api put-object "--bucket=$S3_BUCKET" "--key=$result_key" \
    "--body=$work/result.json" --content-type=application/json >/dev/null 2>"$work/error"; then
    fail 7 RESULT_NOT_WRITTEN "writing s3://$S3_BUCKET/$result_key failed: $(cat "$work/error")" \
        "that the task role allows s3:PutObject on the result prefix"
fi
printf '%s: wrote s3://%s/%s: size %s, sha256 %s, lines %s\n' \
    "$PROGRAM" "$S3_BUCKET" "$result_key" "$size" "$sha256" "$lines"
