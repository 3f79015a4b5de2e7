#!/usr/bin/env bash
# Remakes the README's and the metainfo's screenshots with the app's headless mode, on the demo pair.
#   bash docs/screenshots/make.sh            (from the repository root, after `make run` set up .venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
app=${C2C_PLAYGROUND:-.venv/bin/c2c-playground}
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
# settings of your own would change the window: use a throw-away config folder
XDG_CONFIG_HOME=$(mktemp -d)
export XDG_CONFIG_HOME
trap 'rm -rf "$XDG_CONFIG_HOME"' EXIT
# a fact only the demo sharer knows: the receiver alone does not know it, relay and fusion do
"$app" --pair demo --modes receiver,relay,fusion --prompt "What is the national animal of Mavar?" \
    --screenshot docs/screenshots/comparison.png --exit
# a fact the fuser never saw in training (split c), text relay against cache fusion
"$app" --pair demo --prompt "Which river flows through Deirovia?" \
    --screenshot docs/screenshots/relay-and-fusion.png --exit
# the team showcase: a question that needs both sharers, which only the team's cache fusion (and relay) answers
"$app" --pair team --modes fusion:A,fusion:B,fusion,relay \
    --prompt "What language do people speak in Mavar, and who founded Mavar?" --max-new-tokens 32 \
    --screenshot docs/screenshots/team.png --exit
# the real window on a real X server (Xvfb at 1366x768, the xcb platform), after a question typed in
C2C_UPDATE_SCREENSHOTS=1 QT_QPA_PLATFORM= .venv/bin/python -m pytest -q tests/display -k TestANewUsersFirstStart
# the two real models (make real-models): SmolLM2-135M-Instruct receiver, Gemma-3-270M base sharer
"$app" --pair real --modes receiver,sharer,relay --prompt "What is the capital of Japan?" \
    --max-new-tokens 32 --screenshot docs/screenshots/real-pair.png --exit
# the specialist pair (make real-models): a company fact the fuser never saw (split c) that cache fusion gets
# right (four in five of them do), beside text relay; the receiver alone does not know it
"$app" --pair specialist --modes receiver,relay,fusion --prompt "What is Carl Fleming's job?" \
    --max-new-tokens 24 --screenshot docs/screenshots/specialist.png --exit
