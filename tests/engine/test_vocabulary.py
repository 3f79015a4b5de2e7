"""The vocabulary is declared once (fusers.vocabulary and the config dataclasses): every CLI command's choices and
defaults are the declaration's."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from fusers import vocabulary
from fusers.cli import build_parser
from fusers.engine import Mode
from fusers.generation import GenerationSettings
from fusers.pair import ModelSpec, Placement
from fusers.train.config import TrainConfig


def subcommand(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


PAIR_COMMANDS = ("compare", "serve", "train")


@pytest.mark.parametrize("command", PAIR_COMMANDS)
def test_every_command_offers_the_declared_dtypes_and_quantizations(command):
    parser = subcommand(command)
    assert tuple(option(parser, "--dtype").choices) == vocabulary.DTYPES
    for flag in ("--quantize", "--receiver-quantize", "--sharer-quantize"):
        assert tuple(option(parser, flag).choices) == vocabulary.QUANTIZE
    # and the placement defaults are the dataclass's
    for f in dataclasses.fields(Placement):
        assert option(parser, "--" + f.name).default == f.default


def test_the_placement_fields_carry_the_declared_choices():
    fields = {f.name: f for f in dataclasses.fields(ModelSpec)}
    assert fields["dtype"].metadata["choices"] == vocabulary.DTYPES
    assert fields["quantize"].metadata["choices"] == vocabulary.QUANTIZE
    assert ModelSpec("x").placement == Placement()


@pytest.mark.parametrize("command", ("compare", "serve"))
def test_generation_options_are_the_settings_fields_with_their_help(command):
    parser = subcommand(command)
    for f in GenerationSettings.help_fields():
        action = option(parser, "--" + f.name.replace("_", "-"))
        assert action.dest == f.name and f.metadata["help"] in action.help
        assert action.default is None  # left out, the dataclass's default holds
    assert "--sample" in option(parser, "--do-sample").option_strings  # the old flag name still works


def test_compare_left_alone_decodes_with_the_declared_defaults():
    from fusers.commands.common import settings_from_args

    args = build_parser().parse_args(["compare", "--prompt", "hi"])
    assert GenerationSettings(**settings_from_args(args, GenerationSettings)) == GenerationSettings()
    args = build_parser().parse_args(["compare", "--prompt", "hi", "--sample", "--max-new-tokens", "7"])
    given = GenerationSettings(**settings_from_args(args, GenerationSettings))
    assert given.do_sample and given.max_new_tokens == 7


def test_one_default_answer_length():
    assert GenerationSettings().max_new_tokens == 128


def test_train_choices_are_the_config_fields():
    parser = subcommand("train")
    for f in dataclasses.fields(TrainConfig):
        if "choices" in f.metadata:
            assert tuple(option(parser, "--" + f.name.replace("_", "-")).choices) == f.metadata["choices"]


def test_modes_parse_from_the_declaration_and_bad_ones_name_the_choices():
    assert vocabulary.MODES == tuple(m.value for m in Mode)
    assert vocabulary.parse_modes(",".join(vocabulary.MODES)) == list(Mode)
    with pytest.raises(ValueError, match="--modes takes .*receiver, sharer, relay, fusion, hybrid.*telepathy"):
        vocabulary.parse_modes("relay,telepathy")
    with pytest.raises(ValueError, match="2 to 4"):
        vocabulary.parse_modes("relay", least=vocabulary.MIN_PANES, most=vocabulary.MAX_PANES)
    assert f"(default {','.join(vocabulary.MODES)})" in option(subcommand("compare"), "--modes").help.replace("\n", "")


def test_the_seed_is_drawn_once_and_only_where_sampling_needs_one():
    from fusers.engine import draw_seed

    greedy = GenerationSettings(seed=None)
    assert draw_seed(greedy) is greedy
    fixed = GenerationSettings(do_sample=True, seed=5)
    assert draw_seed(fixed) is fixed
    drawn = draw_seed(GenerationSettings(do_sample=True, seed=None))
    assert isinstance(drawn.seed, int) and draw_seed(drawn) == drawn
