#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by recipe scripts after they define their defaults:
#
#   stage=1; nj=4; train_config=conf/train.yaml
#   help_message="Usage: $0 [options]"
#   . utils/parse_options.sh
#
# Each "--name value" (or "--name=value") sets the shell variable "name" (dashes in the
# name become underscores); the variable must already be defined, so a misspelled option
# is an error, not silently ignored. "--config file" sources a file of name=value lines
# first. "--help" prints $help_message and exits 0. Parsing stops at the first argument
# that does not start with "--"; the remaining arguments are left in "$@".

while true; do
  [ $# -eq 0 ] && break
  case "$1" in
    --help|-h)
      if [ -n "${help_message:-}" ]; then printf '%s\n' "$help_message"; else echo "$0: no help available"; fi
      exit 0 ;;
    --*=*)
      _name="${1%%=*}"; _value="${1#*=}"; shift
      set -- "$_name" "$_value" "$@" ;;
    --*)
      _name=$(echo "${1#--}" | sed 's/-/_/g')
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2; exit 1
      fi
      if [ "$_name" = config ]; then
        [ -f "$2" ] || { echo "$0: --config: no such file: $2" >&2; exit 1; }
        . "$2"; shift 2; continue
      fi
      if ! declare -p "$_name" >/dev/null 2>&1; then
        echo "$0: unknown option $1 (no variable '$_name'); see $0 --help" >&2; exit 1
      fi
      # Booleans must stay booleans: a typo like "--use_lm ture" would otherwise pass.
      case "${!_name}" in
        true|false)
          case "$2" in true|false) ;; *) echo "$0: option $1 takes true or false, got '$2'" >&2; exit 1 ;; esac ;;
      esac
      printf -v "$_name" '%s' "$2"
      shift 2 ;;
    *) break ;;
  esac
done
unset _name _value
true
