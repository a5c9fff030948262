# Option parsing shared by the recipes, as Kaldi's utils/parse_options.sh does it: every
# `--name value` or `--name=value` sets the shell variable `name` (dashes become underscores, so
# --stop-stage and --stop_stage are the same) that the recipe defined *before* sourcing this file;
# an option the recipe has no variable for is an error.  `-h/--help` prints the recipe's header
# comment (lines $help_lines, default 2-20).  Afterwards $bin is where pvae-data and pvae-model
# are: $PVAE_BIN, else the checkout's .venv/bin, else wherever they are on PATH.
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) sed -n "${help_lines:-2,20}p" "$0"; exit 0 ;;
    --*=*) _opt=${1%%=*}; _val=${1#*=}; shift ;;
    --*) _opt=$1
         [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
         _val=$2; shift 2 ;;
    *) echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 1 ;;
  esac
  _var=${_opt#--}; _var=${_var//-/_}
  if ! [[ $_var =~ ^[a-z][a-z0-9_]*$ ]] || [ -z "${!_var+set}" ] || [ "$_var" = help_lines ]; then
    echo "$0: unknown option $_opt" >&2; exit 1
  fi
  printf -v "$_var" '%s' "$_val"
done
unset _opt _val _var
if [ -n "${PVAE_BIN:-}" ]; then
  bin=$PVAE_BIN
elif [ -x "$root/.venv/bin/pvae-data" ]; then
  bin=$root/.venv/bin
elif command -v pvae-data >/dev/null 2>&1; then
  bin=$(dirname "$(command -v pvae-data)")
else
  echo "$0: pvae-data not found: run 'make install' in $root, activate an environment that has it, or set PVAE_BIN" >&2
  exit 1
fi
