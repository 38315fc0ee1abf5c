"""normscope.advice: advice that fits the model (issue #11, part 3)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product

import pytest

from normscope.advice import Topic, anomaly_advice, band_advice, band_topic, label
from normscope.schema import Band, Group, Module, Role

_MTP_ROLES = {Role.mtp_embedding, Role.mtp_hidden, Role.mtp_final}
# Anything that would talk about multi-token prediction to a model without it.
_MTP_WORDS = re.compile(r"mtp|λ|lambda|normformer|multi.token|speculative|eh_proj", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Fake:
    module: Module
    role: Role
    group: Group | None
    layer: int | None
    ratio: float


def trunk_norms() -> list[Fake]:
    """Every main-model role x group (placements included that no rule table produces today)."""
    return [
        Fake(Module.main, role, group, None if role is Role.final else 3, ratio)
        for role, group, ratio in product(
            [r for r in Role if r not in _MTP_ROLES], [*Group, None], (0.0, 0.05, 1.0, 2.5)
        )
    ]


def test_no_advice_mentions_mtp_on_a_model_without_mtp() -> None:
    texts = []
    for norm, band in product(trunk_norms(), Band):
        advice = band_advice(norm, band, has_mtp=False)
        if advice is not None:
            assert not advice.topic.mtp
            texts.append(advice.text)
        texts.append(anomaly_advice(norm, 0.4, peers=29).text)
    assert len(texts) > 500
    offending = [t for t in texts if _MTP_WORDS.search(t)]
    assert offending == []


def test_mtp_advice_goes_to_mtp_norms_and_the_final_norm_of_mtp_models() -> None:
    mtp = Fake(Module.mtp, Role.mtp_hidden, Group.input, None, 0.2)
    final = Fake(Module.main, Role.final, Group.input, None, 0.27)
    layer = Fake(Module.main, Role.attn_input, Group.input, 4, 0.05)
    assert band_topic(mtp, Band.collapse, has_mtp=True) is Topic.mtp_collapse
    assert band_topic(mtp, Band.explosion, has_mtp=True) is Topic.mtp_explosion
    assert band_topic(final, Band.collapse, has_mtp=True) is Topic.final_collapse_mtp
    assert band_topic(final, Band.explosion, has_mtp=True) is Topic.final_explosion_mtp
    assert band_topic(final, Band.collapse, has_mtp=False) is Topic.final_collapse
    assert band_topic(final, Band.explosion, has_mtp=False) is Topic.final_explosion
    # A trunk norm of an MTP model still gets the trunk advice.
    assert band_topic(layer, Band.collapse, has_mtp=True) is Topic.input_norm
    advice = band_advice(final, Band.collapse, has_mtp=True)
    assert advice is not None
    assert "0.27x its intended size" in advice.text
    assert "mtp_loss_scaling_factor" in advice.text


@pytest.mark.parametrize("band", [Band.collapse, Band.explosion])
@pytest.mark.parametrize("has_mtp", [False, True])
def test_final_norm_advice_names_its_group(band: Band, has_mtp: bool) -> None:
    for group, right, wrong in (
        (Group.input, "input norm", "output norm"),
        (Group.output, "output norm", "input norm"),
    ):
        advice = band_advice(Fake(Module.main, Role.final, group, None, 0.2), band, has_mtp=has_mtp)
        assert advice is not None
        if advice.topic is Topic.final_explosion_mtp:
            continue  # the playbook's explosion lever is the MTP norm, not decay
        assert right in advice.text and wrong not in advice.text
        assert "seed 001" in advice.text


def test_final_norm_of_a_model_without_mtp_gets_the_generic_playbook_text() -> None:
    final = Fake(Module.main, Role.final, Group.input, None, 0.2)
    collapse = band_advice(final, Band.collapse, has_mtp=False)
    explosion = band_advice(final, Band.explosion, has_mtp=False)
    assert collapse is not None and explosion is not None
    for advice in (collapse, explosion):
        assert "learning-rate warm-up" in advice.text
        assert "weight decay" in advice.text
        assert advice.text.startswith("the final norm at 0.20x its initial size")


def test_in_band_norms_get_no_advice_and_nonfinite_always_does() -> None:
    for norm, has_mtp in product(trunk_norms(), (False, True)):
        for band in (Band.shrink, Band.balanced, Band.grow):
            assert band_advice(norm, band, has_mtp=has_mtp) is None
        assert band_topic(norm, Band.nonfinite, has_mtp=has_mtp) is Topic.nonfinite


def test_non_gated_input_and_output_norms() -> None:
    inp = band_advice(
        Fake(Module.main, Role.mlp_input, Group.input, 7, 0.1), Band.collapse, has_mtp=False
    )
    out = band_advice(
        Fake(Module.main, Role.mlp_output, Group.output, 7, 3.0), Band.explosion, has_mtp=False
    )
    unplaced = band_advice(
        Fake(Module.main, Role.unknown, None, 7, 0.1), Band.collapse, has_mtp=False
    )
    assert inp is not None and out is not None and unplaced is not None
    assert "the next linear map absorbs their scale" in inp.text
    assert "compare with earlier checkpoints" in inp.text
    assert out.text.startswith("layer 7's mlp_output norm scales what its sublayer adds")
    assert "weight decay hurts it" in out.text
    assert unplaced.topic is Topic.unplaced_norm


def test_anomaly_advice_says_how_far_and_which_way() -> None:
    low = Fake(Module.main, Role.attn_input, Group.input, 0, 0.0399)
    high = Fake(Module.main, Role.mlp_output, Group.output, 10, 3.0)
    a = anomaly_advice(low, 0.3218, peers=29)
    b = anomaly_advice(high, 0.8, peers=61)
    assert a.text.startswith("layer 0's attn_input norm is 8.1x below the median of its 29 peers")
    assert b.text.startswith("layer 10's mlp_output norm is 3.8x above the median of its 61 peers")
    assert "neighbouring layers" in a.text
    zero = anomaly_advice(Fake(Module.main, Role.attn_input, Group.input, 2, 0.0), 0.3, peers=9)
    assert "infx below" in zero.text


def test_every_topic_has_a_template_and_only_mtp_topics_talk_about_mtp() -> None:
    from normscope.advice import _TEMPLATES

    assert set(_TEMPLATES) == set(Topic)
    for topic, (template, source) in _TEMPLATES.items():
        assert source
        assert bool(_MTP_WORDS.search(template)) is topic.mtp, topic


def test_labels() -> None:
    assert label(Fake(Module.main, Role.final, Group.input, None, 1.0)) == "the final norm"
    assert label(Fake(Module.mtp, Role.mtp_hidden, Group.input, None, 1.0)) == "the mtp_hidden norm"
    assert label(Fake(Module.main, Role.qk, Group.input, 5, 1.0)) == "layer 5's qk norm"
