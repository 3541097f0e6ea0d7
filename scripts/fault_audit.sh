#!/usr/bin/env bash
# The fault audit: bad inputs and faults a hostile but realistic user would try, each run
# through the release binary in a scratch directory. Prints a Markdown table: the case, the
# exit code it should have (1 for anything the user can fix), the exit code it had, and the
# first line the user reads. A row marked `!!` had an unexpected exit code or a panic.
#   bash scripts/fault_audit.sh > audit.md
# Not part of CI (it builds the release binary and trains a few tiny steps: ~2 minutes).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
(cd "$repo" && cargo build --release --quiet) || exit 2
bin="$repo/target/release/chartrl"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 2
cp -r "$repo/configs" "$repo/scripts" .

n=0
echo "| # | case | want | got | what the user reads |"
echo "|---|---|---|---|---|"
# case WANT DESCRIPTION -- COMMAND...
case_() {
    local want=$1 what=$2
    shift 3
    n=$((n + 1))
    local out code first
    if declare -F "$1" >/dev/null; then
        out=$("$@" 2>&1 </dev/null)
    else
        out=$(timeout 120 "$@" 2>&1 </dev/null)
    fi
    code=$?
    first=$(printf '%s\n' "$out" | grep -m1 -E '^error|panicked|warning' || printf '%s\n' "$out" | tail -n1)
    first=${first//|/\\|}
    first=${first:0:200}
    local mark=""
    if [ "$code" != "$want" ] || printf '%s' "$out" | grep -q panicked; then mark=" !!"; fi
    echo "| $n | $what | $want | $code$mark | \`$first\` |"
}
c() { case_ "$@"; }

# Fixtures: a tiny model, data files good and bad.
"$bin" model init --preset tiny --out m --corpus-size 300 >/dev/null 2>&1
"$bin" data gen --split train --size 4 --out good.jsonl >/dev/null 2>&1
good=$(head -n1 good.jsonl)
mkdir -p dir.jsonl ro
printf '%s\n' "$good" | sed 's/"chart":/"chrt":/' >nochart.jsonl
printf '%s,\n' "$good" >trailing.jsonl
printf '%s\n' "$good" | sed 's/"answer_kind":"[a-z]*"/"answer_kind":"date"/' >kind.jsonl
printf '%s\n' "$good" | sed 's/"values":\[/"values":["x",/' >strvalue.jsonl
printf '%s\n' "$good" | sed 's/"labels":\[[^]]*\]/"labels":[]/' >nolabels.jsonl
printf '%s\n' "$good" | sed 's/"kind":"[a-z_]*"/"kind":"scatter"/' >scatter.jsonl
printf '%s\r\n' "$good" "$good" >crlf.jsonl
printf '\n\n  \n' >blank.jsonl
printf '{"id": "\xff"}\n' >badutf8.jsonl
printf '%s\n' "$good" >data.txt
printf '{"imgname": "a.png", "query": "q", "label": "1"}\n' >notalist.json
mkdir -p cq/tables cq2/tables cq3/tables
printf '[{"imgname": "a.png", "query": "How many?", "label": "3"}]\n' >cq/q.json
printf '[{"imgname": "a.png", "query": "How many?", "label": "3"}]\n' >cq2/q.json
printf 'Year,Sales\n2020,abc\n' >cq2/tables/a.csv
printf '[{"imgname": "a.png", "query": "How many?", "label": "3"}]\n' >cq3/q.json
printf 'Year,Sales\n2020,1,2\n' >cq3/tables/a.csv
cp -r m badcfg && echo '{"hidden_size": ' >badcfg/config.json
cp -r m nohidden && python3 -c "import json;c=json.load(open('m/config.json'));del c['hidden_size'];json.dump(c,open('nohidden/config.json','w'))"
cp -r m trunc && head -c 1000 m/model.safetensors >trunc/model.safetensors
cp -r m notok && rm notok/tokenizer.json
cp -r m badtok && echo '{}' >badtok/tokenizer.json
cp -r m shape && python3 -c "import json;c=json.load(open('m/config.json'));c['intermediate_size']=700;json.dump(c,open('shape/config.json','w'))"
cp -r m heads && python3 -c "import json;c=json.load(open('m/config.json'));c['num_attention_heads']=3;json.dump(c,open('heads/config.json','w'))"
cp -r m kvheads && python3 -c "import json;c=json.load(open('m/config.json'));c['num_key_value_heads']=3;json.dump(c,open('kvheads/config.json','w'))"
cp -r m llama && python3 -c "import json;c=json.load(open('m/config.json'));c['model_type']='llama';c['architectures']=['LlamaForCausalLM'];json.dump(c,open('llama/config.json','w'))"
printf 'hidden_size: -5\n' >neg.yaml
printf 'bogus: 1\n' >unknown.yaml
printf -- '- mode: nsr\n' >list.yaml
echo "not a database, just text" >notdb.db

echo "| | **data** | | | |"
c 1 "JSONL line without its chart" -- "$bin" data stats nochart.jsonl
c 1 "JSONL line with a trailing comma" -- "$bin" data stats trailing.jsonl
c 1 "JSONL answer_kind that does not exist" -- "$bin" data stats kind.jsonl
c 1 "JSONL series value that is a string" -- "$bin" data stats strvalue.jsonl
c 1 "JSONL chart with no labels" -- "$bin" data stats nolabels.jsonl
c 1 "JSONL chart kind scatter" -- "$bin" data stats scatter.jsonl
c 0 "JSONL with CRLF line ends" -- "$bin" data stats crlf.jsonl
c 1 "JSONL of blank lines only" -- "$bin" data stats blank.jsonl
c 1 "JSONL with invalid UTF-8" -- "$bin" data stats badutf8.jsonl
c 1 "data file that is a directory" -- "$bin" data stats dir.jsonl
c 1 "data file with an unknown extension" -- "$bin" data stats data.txt
c 1 "data file that does not exist" -- "$bin" data stats missing.jsonl
c 1 "ChartQA JSON that is not a list" -- "$bin" data stats notalist.json
c 1 "ChartQA without its table" -- "$bin" data stats cq/q.json
c 1 "ChartQA table cell not a number" -- "$bin" data stats cq2/q.json
c 1 "ChartQA table row too long" -- "$bin" data stats cq3/q.json
c 1 "data show index out of range" -- "$bin" data show good.jsonl --index 99
c 1 "data render to a directory" -- "$bin" data render good.jsonl --out dir.jsonl
c 1 "data gen of an unknown split" -- "$bin" data gen --split valid --size 2 --out x.jsonl
c 1 "data gen into a directory" -- "$bin" data gen --size 2 --out dir.jsonl
c 1 "data gen under a path through a file" -- "$bin" data gen --size 2 --out good.jsonl/x.jsonl

echo "| | **models** | | | |"
c 1 "model init of an unknown preset" -- "$bin" model init --preset huge --out x
c 1 "model init from a preset with a negative size" -- "$bin" model init --preset neg.yaml --out x
c 1 "model init from a preset with an unknown key" -- "$bin" model init --preset unknown.yaml --out x
c 1 "model info on a directory without config.json" -- "$bin" model info dir.jsonl
c 1 "model info on invalid config.json" -- "$bin" model info badcfg
c 1 "model info on config.json without hidden_size" -- "$bin" model info nohidden
c 1 "model info on truncated weights" -- "$bin" model info trunc
c 1 "model info without tokenizer.json" -- "$bin" model info notok
c 1 "model info on an invalid tokenizer.json" -- "$bin" model info badtok
c 1 "model info with a shape that contradicts config.json" -- "$bin" model info shape
c 1 "model info: heads do not divide the hidden size" -- "$bin" model info heads
c 1 "model info: KV heads do not divide the heads" -- "$bin" model info kvheads
c 1 "model info on a Llama config" -- "$bin" model info llama
c 0 "model logprobs of an empty text (no tokens, nothing to score)" -- "$bin" model logprobs m --text ""

echo "| | **training options** | | | |"
# Defaults through --set, so a case may give any flag (a later --set wins).
t() { "$bin" train --model m --set num_generations=2 --set max_completion_length=8 "$@"; }
c 1 "negative learning rate" -- t --learning-rate -1
c 1 "NaN learning rate" -- t --learning-rate NaN
c 1 "temperature 0 for training" -- t --temperature 0
c 1 "top_p above 1" -- t --set top_p=1.5
c 1 "unknown loss_type" -- t --set loss_type=foo
c 1 "no rewards" -- t --set 'rewards=[]'
c 1 "a reward parameter that does not exist" -- t --set 'rewards=[{"name":"cosine","params":{"bogus":1}}]'
c 1 "a --config file that does not exist" -- t --config nope.yaml
c 1 "a --config file that is a list" -- t --config list.yaml
c 1 "subset_size 0" -- t --subset-size 0
c 1 "num_epochs 0" -- t --num-epochs 0
c 1 "negative beta" -- t --beta -0.1
c 1 "epsilon 0" -- t --set epsilon=0
c 1 "negative lambda_psr" -- t --lambda-psr -1
c 1 "negative weight_decay" -- t --set weight_decay=-1
c 1 "negative max_grad_norm" -- t --set max_grad_norm=-1
c 1 "a run name with a slash" -- t --name bad/name
c 1 "--db that is a directory" -- t --db dir.jsonl
c 1 "--data with fewer samples than subset_size" -- t --data good.jsonl --subset-size 10
c 1 "batch_size larger than subset_size" -- t --subset-size 2 --set batch_size=4
c 1 "max_completion_length past the model's positions" -- t --set max_completion_length=100000
c 1 "--model that does not exist" -- "$bin" train --model nope
c 1 "--model that is a file" -- "$bin" train --model good.jsonl
c 1 "--set without =" -- t --set beta
c 1 "warm-start with 0 samples" -- "$bin" warm-start --model m --samples 0
c 1 "warm-start with batch size 0" -- "$bin" warm-start --model m --batch-size 0
c 1 "warm-start with learning rate 0" -- "$bin" warm-start --model m --learning-rate 0 --samples 4 --batch-size 2
c 1 "warm-start --out over another model" -- "$bin" warm-start --model m --samples 4 --batch-size 2 --epochs 1 --eval-size 0 --out badcfg

echo "| | **evaluation and sampling** | | | |"
c 1 "eval of a run that does not exist" -- "$bin" eval --run nope
c 1 "eval with n 0" -- "$bin" eval --model m --n 0
c 1 "eval with a negative temperature" -- "$bin" eval --model m --temperature -1
c 1 "eval with k 0" -- "$bin" eval --model m --n 2 --k 0
c 1 "eval of 0 questions" -- "$bin" eval --model m --questions 0
c 1 "eval with top_p 0" -- "$bin" eval --model m --top-p 0
c 1 "eval on a CUDA device in a CPU build" -- "$bin" eval --model m --device cuda
c 1 "eval on an unknown device" -- "$bin" eval --model m --device tpu
c 1 "sample an index past the data" -- "$bin" sample --model m --index 100000 --data good.jsonl
c 1 "sample an empty prompt" -- "$bin" sample --model m --prompt ""

echo "| | **runs, reports, store** | | | |"
"$bin" train --model m --subset-size 2 --batch-size 2 --num-generations 2 --max-completion-length 8 --name ok-run >/dev/null 2>&1
c 1 "runs show of a run that does not exist" -- "$bin" runs show nope
c 1 "runs export in an unknown format" -- "$bin" runs export ok-run --format xml
c 0 "runs export into a directory that does not exist yet" -- "$bin" runs export ok-run --out new/dir/m.csv
c 1 "report --out that is a file" -- "$bin" report ok-run --out good.jsonl
c 1 "monitor of a run that does not exist" -- "$bin" monitor nope
c 1 "a store that is not a database" -- "$bin" runs --db notdb.db
c 1 "a store from a newer chartrl" -- bash -c "cp runs/chartrl.db newer.db && python3 -c \"import sqlite3;c=sqlite3.connect('newer.db');c.execute('PRAGMA user_version=99');c.commit()\" && $bin runs --db newer.db"
c 1 "a store cut in half" -- bash -c "head -c 8192 runs/chartrl.db >half.db && $bin runs --db half.db"
c 1 "a run name reused for another configuration" -- t --name ok-run --seed 7

echo "| | **scripts** | | | |"
s() { printf '%s\n' "$1" >s.rhai; "$bin" exec s.rhai --time-limit 5 "${@:2}"; }
c 1 "a script that does not exist" -- "$bin" exec nope.rhai
c 1 "a syntax error" -- s 'let x = ;'
c 1 "an unknown function" -- s 'frobnicate(1);'
c 1 "--set without =" -- s 'print(1);' --set n
c 1 "--set of the wrong type" -- s 'let n = param("n", 4); print(n);' --set n=abc
c 1 "an import outside scripts/" -- s 'import "../etc/passwd" as p;'
c 1 "data() outside the working directory" -- s 'data("/etc/passwd");'
c 1 "an endless loop" -- s 'loop { }'
c 1 "deep recursion" -- s 'fn f(n) { f(n + 1) } f(0);'
c 1 "a string doubled until memory runs out" -- s 'let s = "x"; loop { s += s; }'
c 0 "2 million pushes (was quadratic)" -- s 'let a = []; for i in 0..2000000 { a.push(i); } print(a.len());'
c 1 "a busy loop past a 1 s time limit" -- bash -c "printf 'let x = 0; loop { x += 1; }' >t.rhai && $bin exec t.rhai --time-limit 1"
c 1 "train with an unknown option" -- s 'train(#{ mode: "nsr", model: model("m"), bogus: 1 });'
c 1 "train with a number as model" -- s 'train(#{ mode: "nsr", model: 5 });'
c 1 "evaluate with n 0" -- s 'evaluate(model("m"), chart_data(#{split: "test"}).take(2), #{ n: 0 });'
c 1 "report with an unknown option" -- s 'report(#{ bogus: 1 });'
c 1 "an experiment name with spaces" -- s 'experiment("bad name");'
c 1 "chart_data with a negative size" -- s 'chart_data(#{ size: -5 });'
c 1 "take(0)" -- s 'chart_data().take(0);'
c 1 "throw" -- s 'throw "stop here";'

echo "| | **other** | | | |"
c 1 "bench of an unknown preset" -- "$bin" bench --preset huge
c 1 "an unknown command" -- "$bin" frobnicate
c 0 "--help of every command" -- bash -c "for x in exec model data rewards warm-start train runs sample eval report monitor bench; do $bin \$x --help >/dev/null || exit 1; done"
echo
echo "$n cases."
