import math

import numpy as np
import pytest
import torch

from livt.prior import prior_offset
from livt.training.losses import (
    LOSSES,
    CrossEntropy,
    build_loss,
    class_balanced_weights,
    loss_defaults,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def bce_term(z: float, t: float) -> float:
    # BCEWithLogits(z, t) = -t log sigmoid(z) - (1 - t) log(1 - sigmoid(z)) = softplus(z) - t z
    return softplus(z) - t * z


def log_softmax(row: list[float]) -> list[float]:
    norm = math.log(sum(math.exp(v) for v in row))
    return [v - norm for v in row]


def longtail_counts(num_classes: int = 10) -> list[int]:
    return [int(600 * 0.01 ** (c / (num_classes - 1))) for c in range(num_classes)]


def test_registry_names():
    assert set(LOSSES) == {"ce", "bce", "bal-ce", "bal-bce", "cb-ce", "ldam", "focal"}


def test_unknown_loss_lists_the_names():
    with pytest.raises(ValueError, match=r"unknown loss 'bal_bce'.*'bal-bce'"):
        build_loss("bal_bce", [3, 1])


def test_unknown_option_is_rejected_with_the_accepted_ones():
    with pytest.raises(ValueError, match=r"'ce' takes options \['smoothing'\], got unknown \['tau'\]"):
        build_loss("ce", [3, 1], tau=1.0)
    assert loss_defaults("bal-bce") == {"smoothing": 0.1, "tau": 1.0, "smoothing_toward": "prior"}
    with pytest.raises(ValueError, match=r"smoothing_toward must be one of \['prior', 'uniform'\]"):
        build_loss("bal-bce", [3, 1], smoothing_toward="prio")


@pytest.mark.parametrize("counts", [[], [5], [3, 0], [3, -1], [3, 1.5], [3, float("nan")], [[1, 2]]])
def test_bad_class_counts(counts):
    with pytest.raises(ValueError, match="class_counts"):
        build_loss("bal-bce", counts)


def test_bce_hand_example_with_default_smoothing():
    loss = build_loss("bce", [3, 1])
    z = [1.0, -2.0]
    got = loss(torch.tensor([z]), torch.tensor([1]))
    # smoothing 0.1, C = 2: off = 0.05, on = 0.95; the C factor makes it a sum over classes
    expected = bce_term(z[0], 0.05) + bce_term(z[1], 0.95)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_bal_bce_bias_and_hand_example():
    loss = build_loss("bal-bce", [3, 1])
    # pi = (0.75, 0.25): log(pi / (1 - pi)) = (log 3, -log 3)
    torch.testing.assert_close(loss.logit_bias, torch.tensor([math.log(3), -math.log(3)]))
    assert "logit_bias" in dict(loss.named_buffers())
    z = [[0.5, 0.5], [-1.0, 2.0]]
    b = [math.log(3), -math.log(3)]
    # Smoothing 0.1 toward q = softmax(b) = (0.9, 0.1), the default: t = 0.9 * one_hot + 0.1 * q.
    # Toward uniform (the paper's), q = (0.5, 0.5).
    for toward, t in (("prior", [[0.99, 0.01], [0.09, 0.91]]), ("uniform", [[0.95, 0.05], [0.05, 0.95]])):
        got = build_loss("bal-bce", [3, 1], smoothing_toward=toward)(torch.tensor(z), torch.tensor([0, 1]))
        total = sum(bce_term(z[n][c] + b[c], t[n][c]) for n in range(2) for c in range(2))
        assert got.item() == pytest.approx(2 * total / 4, rel=1e-6)


def test_bal_bce_tau_scales_the_bias_and_tau_zero_is_bce():
    counts = [50, 10, 2]
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 1, 2, 1])
    half = build_loss("bal-bce", counts, tau=0.5)
    full = build_loss("bal-bce", counts)
    torch.testing.assert_close(half.logit_bias * 2, full.logit_bias)
    plain = build_loss("bal-bce", counts, tau=0.0)
    t = torch.full((4, 3), 0.1 / 3)
    t[torch.arange(4), target] = 0.9 + 0.1 / 3
    bce_term_only = (torch.nn.functional.softplus(logits) - t * logits).sum() / 4
    torch.testing.assert_close(plain(logits, target), bce_term_only)
    torch.testing.assert_close(build_loss("bce", counts)(logits, target), bce_term_only)


def test_bal_bce_bias_orders_head_to_tail():
    counts = longtail_counts(10)
    bias = build_loss("bal-bce", counts).logit_bias
    # every pi < 0.5, so every log-odds is negative; the head's is the least negative
    assert (bias < 0).all()
    assert torch.all(bias[:-1] > bias[1:])
    # a head class holding most of the data gets a positive bias
    assert build_loss("bal-bce", [90, 5, 5]).logit_bias[0] > 0


@pytest.mark.parametrize("name", ["bal-bce", "bal-ce"])
def test_logit_bias_matches_the_export_offset(name):
    counts = longtail_counts(10)
    pi = np.asarray(counts) / sum(counts)
    offset = prior_offset(pi, name, 0.7, len(counts), rule="loss")  # the loss's own offset, not Bayes'
    bias = build_loss(name, counts, tau=0.7).logit_bias
    np.testing.assert_allclose(bias.numpy(), offset, rtol=1e-6)


def test_bce_c_factor():
    counts = [1] * 7
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 7, (5,), generator=torch.Generator().manual_seed(2))
    mean = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.nn.functional.one_hot(target, 7).float()
    )
    got = build_loss("bce", counts, smoothing=0.0)(logits, target)
    torch.testing.assert_close(got, 7 * mean)


def test_ce_hand_example_and_smoothing():
    z = [2.0, 1.0, 0.0]
    lp = log_softmax(z)
    got = build_loss("ce", [5, 3, 1])(torch.tensor([z]), torch.tensor([0]))
    assert got.item() == pytest.approx(-lp[0], rel=1e-6)
    smoothed = build_loss("ce", [5, 3, 1], smoothing=0.3)(torch.tensor([z]), torch.tensor([0]))
    t = [0.7 + 0.1, 0.1, 0.1]
    assert smoothed.item() == pytest.approx(-sum(ti * li for ti, li in zip(t, lp, strict=True)), rel=1e-6)


def test_bal_ce_is_logit_adjusted_ce():
    z = [0.0, 1.0, 0.5]
    counts = [2, 1, 1]  # pi = (0.5, 0.25, 0.25)
    adjusted = [z[0] + math.log(0.5), z[1] + math.log(0.25), z[2] + math.log(0.25)]
    got = build_loss("bal-ce", counts)(torch.tensor([z]), torch.tensor([2]))
    assert got.item() == pytest.approx(-log_softmax(adjusted)[2], rel=1e-6)


def test_cb_ce_weights_and_loss():
    w = class_balanced_weights(torch.tensor([10, 1]), beta=0.9)
    raw = [0.1 / (1 - 0.9**10), 0.1 / (1 - 0.9)]
    expected = [2 * r / sum(raw) for r in raw]
    torch.testing.assert_close(w, torch.tensor(expected))
    counts = longtail_counts(10)
    default = build_loss("cb-ce", counts).class_weight
    assert default.sum().item() == pytest.approx(10, rel=1e-6)
    assert torch.all(default[:-1] < default[1:])  # rarer class, larger weight

    # the weighted sum is divided by the batch size (not by the sum of the samples' weights, as
    # torch's weighted cross_entropy does), so index and soft targets give the same value
    z = [[1.0, 0.0], [0.3, -0.2], [-0.5, 0.5]]
    got = build_loss("cb-ce", [10, 1], beta=0.9)(torch.tensor(z), torch.tensor([0, 0, 1]))
    ce = [-log_softmax(z[0])[0], -log_softmax(z[1])[0], -log_softmax(z[2])[1]]
    weighted = expected[0] * ce[0] + expected[0] * ce[1] + expected[1] * ce[2]
    assert got.item() == pytest.approx(weighted / 3, rel=1e-6)


def test_ldam_margins_and_hand_example():
    loss = build_loss("ldam", [16, 1], s=2.0)
    # n^(-1/4) = (0.5, 1) scaled so the largest margin is 0.5
    torch.testing.assert_close(loss.margins, torch.tensor([0.25, 0.5]))
    z = [0.4, 0.1]
    got = loss(torch.tensor([z]), torch.tensor([0]))
    expected = -log_softmax([2 * (z[0] - 0.25), 2 * z[1]])[0]
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ldam_deferred_reweighting_switches_at_drw_epoch():
    counts = [16, 1]
    loss = build_loss("ldam", counts, s=2.0, drw_epoch=2, beta=0.9)
    z = torch.tensor([[0.4, 0.1], [0.2, 0.3]])
    y = torch.tensor([0, 1])
    ce = [-log_softmax([2 * (0.4 - 0.25), 2 * 0.1])[0], -log_softmax([2 * 0.2, 2 * (0.3 - 0.5)])[1]]
    loss.set_epoch(1)
    assert not loss.reweighting
    assert loss(z, y).item() == pytest.approx(sum(ce) / 2, rel=1e-6)
    loss.set_epoch(2)
    assert loss.reweighting
    raw = [0.1 / (1 - 0.9**16), 0.1 / (1 - 0.9)]
    w = [2 * r / sum(raw) for r in raw]
    assert loss(z, y).item() == pytest.approx((w[0] * ce[0] + w[1] * ce[1]) / 2, rel=1e-6)
    never = build_loss("ldam", counts)
    never.set_epoch(10_000)
    assert not never.reweighting


def test_focal_hand_example_and_gamma_zero_is_ce():
    z = [1.0, 0.0, -1.0]
    lp = log_softmax(z)
    got = build_loss("focal", [4, 2, 1])(torch.tensor([z]), torch.tensor([1]))
    p1 = math.exp(lp[1])
    assert got.item() == pytest.approx(-((1 - p1) ** 2) * lp[1], rel=1e-6)
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(
        build_loss("focal", [4, 2, 1], gamma=0.0)(logits, target),
        torch.nn.functional.cross_entropy(logits, target),
    )


@pytest.mark.parametrize("name", LOSSES)
def test_one_hot_soft_target_equals_index_target(name):
    counts = [40, 9, 3]
    loss = build_loss(name, counts, smoothing=0.0)
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([0, 2, 1, 1, 0])
    soft = torch.nn.functional.one_hot(target, 3).float()
    torch.testing.assert_close(loss(logits, soft), loss(logits, target))


@pytest.mark.parametrize("name", LOSSES)
def test_the_loss_smooths_soft_targets_as_it_smooths_index_targets(name):
    loss = build_loss(name, [40, 9, 3], smoothing=0.1)
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([2, 0, 1, 2])
    one_hot = torch.nn.functional.one_hot(target, 3).float()
    torch.testing.assert_close(loss(logits, one_hot), loss(logits, target))
    # A mixed target (timm Mixup, which no longer smooths) gets (1 - s) t + s q too.
    mixed = torch.softmax(torch.randn(4, 3, generator=torch.Generator().manual_seed(8)), dim=1)
    smoothed = 0.9 * mixed + 0.1 * loss.smoothing_distribution
    torch.testing.assert_close(
        loss(logits, mixed), build_loss(name, [40, 9, 3], smoothing=0.0)(logits, smoothed)
    )


def test_smoothing_distribution_is_the_loss_prior_and_uniform_without_one():
    counts = [40, 9, 3]
    for name in ("bal-bce", "bal-ce"):
        loss = build_loss(name, counts, smoothing=0.1)
        torch.testing.assert_close(loss.smoothing_distribution, loss.logit_bias.softmax(0))
        assert loss.smoothing_distribution[0] > 1 / 3 > loss.smoothing_distribution[2]
        uniform = build_loss(name, counts, smoothing=0.1, smoothing_toward="uniform")
        torch.testing.assert_close(uniform.smoothing_distribution, torch.full((3,), 1 / 3))
    for name in ("ce", "bce", "cb-ce", "ldam", "focal"):
        torch.testing.assert_close(build_loss(name, counts).smoothing_distribution, torch.full((3,), 1 / 3))
    # Equal counts: the prior is uniform, so the default is the paper's smoothing.
    torch.testing.assert_close(
        build_loss("bal-bce", [7, 7, 7]).smoothing_distribution, torch.full((3,), 1 / 3)
    )


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_are_finite_for_extreme_logits(name):
    loss = build_loss(name, longtail_counts(10))
    loss.set_epoch(0)
    logits = (torch.randn(8, 10, generator=torch.Generator().manual_seed(6)) * 60).requires_grad_()
    mixed = torch.softmax(torch.randn(8, 10, generator=torch.Generator().manual_seed(7)), dim=1)
    value = loss(logits, mixed)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_buffers_follow_the_module_and_low_precision_logits_work():
    loss = build_loss("bal-bce", [3, 1]).to(torch.float64)
    assert loss.class_counts.dtype == torch.int64
    value = loss(torch.zeros(2, 2, dtype=torch.bfloat16), torch.tensor([0, 1]))
    assert value.dtype in (torch.float32, torch.float64) and torch.isfinite(value)


def test_shape_errors_name_the_problem():
    loss = build_loss("ce", [3, 1, 1])
    with pytest.raises(ValueError, match=r"logits must have shape \(N, 3\)"):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="2 labels for a batch of 3"):
        loss(torch.zeros(3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="soft target"):
        loss(torch.zeros(2, 3), torch.zeros(2, 2))


IF1000 = [5700, 2784, 1292, 600, 278, 129, 60, 27, 12, 6]  # Fashion-MNIST-LT at imbalance factor 1000
IF100 = [5700, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]


def test_smoothing_conflict_is_found_where_the_rare_optimum_passes_the_head_one():
    loss = build_loss("bal-bce", IF1000, smoothing_toward="uniform")  # the paper's: 0.1 toward 1/C, tau 1
    message = loss.smoothing_conflict([f"c{i}" for i in range(10)])
    assert message and "'c9' +0.69 above that of 'c0' on 'c0''s own images" in message
    # The optima it compares are where the gradient of a sigmoid's BCE vanishes.
    on, off = 1 - 0.1 + 0.01, 0.01
    for c, target, shown in ((9, off, 2.9), (0, on, 2.2)):
        b = loss.logit_bias[c].double()
        exact = math.log(target / (1 - target)) - float(b)
        assert exact == pytest.approx(shown, abs=0.05)
        z = torch.tensor(exact, dtype=torch.float64, requires_grad=True)
        torch.nn.functional.binary_cross_entropy_with_logits(
            z + b, torch.tensor(target, dtype=torch.float64)
        ).backward()
        assert abs(z.grad.item()) < 1e-9
    uniform = {"smoothing_toward": "uniform"}
    assert build_loss("bal-bce", IF100, **uniform).smoothing_conflict() is None  # clear at tau 1
    assert build_loss("bal-bce", IF100, tau=1.5, **uniform).smoothing_conflict() is not None
    assert build_loss("bal-bce", IF1000, smoothing=0.0, **uniform).smoothing_conflict() is None
    assert build_loss("bal-bce", IF1000, tau=0.5, **uniform).smoothing_conflict() is None
    assert build_loss("bce", IF1000).smoothing_conflict() is None  # no prior in the logits
    # Many classes make the off target small: ImageNet-LT's 1280 down to 5 over 1000 classes is clear.
    imagenet_lt = [round(1280 * (5 / 1280) ** (i / 999)) for i in range(1000)]
    assert build_loss("bal-bce", imagenet_lt, **uniform).smoothing_conflict() is None


def test_smoothing_conflict_of_the_softmax_is_found_where_the_rare_logit_passes_the_head_one():
    # Ten classes at smoothing 0.1: log(on / off) = log 91, so tau 1 crosses from IF 91 on.
    loss = build_loss("bal-ce", IF100, smoothing=0.1, smoothing_toward="uniform")
    message = loss.smoothing_conflict([f"c{i}" for i in range(10)])
    gap = math.log(0.01 / 0.91) + math.log(IF100[0] / IF100[-1])
    assert message and f"'c9' {gap:+.2f} above that of 'c0'" in message
    # At that gap (every other logit at its optimum too) the gradient on a head image vanishes.
    b = loss.logit_bias.double()
    z = (torch.log(torch.full((10,), 0.01, dtype=torch.float64)) - b).requires_grad_(True)
    with torch.no_grad():
        z[0] = math.log(0.91) - b[0]
    assert float((z[9] - z[0]).detach()) == pytest.approx(gap, abs=1e-5)  # the bias is float32
    target = torch.full((1, 10), 0.01, dtype=torch.float64)
    target[0, 0] = 0.91
    torch.nn.functional.cross_entropy((z + b)[None], target).backward()
    assert z.grad.abs().max().item() < 1e-9
    uniform = {"smoothing": 0.1, "smoothing_toward": "uniform"}
    assert build_loss("bal-ce", IF100).smoothing_conflict() is None  # its own default: no smoothing
    assert build_loss("bal-ce", IF100, tau=0.9, **uniform).smoothing_conflict() is None
    assert build_loss("ce", IF1000, smoothing=0.1).smoothing_conflict() is None  # no prior in the logits
    assert build_loss("ldam", IF1000).smoothing_conflict() is None
    # Class weights and focusing move the optimum the check solves for: it is not made for them.
    assert CrossEntropy(IF1000, tau=1.0, beta=0.999, **uniform).smoothing_conflict() is None
    assert CrossEntropy(IF1000, tau=1.0, gamma=2.0, **uniform).smoothing_conflict() is None
    assert CrossEntropy(IF1000, tau=1.0, **uniform).smoothing_conflict() is not None


# Where smoothing toward 1/C crosses: Bal-BCE tau 1 at IF 1000, tau 1.5 at IF 100; Bal-CE at IF 100.
CROSSINGS = [
    ("bal-bce", IF1000, {}),
    ("bal-bce", IF100, {"tau": 1.5}),
    ("bal-ce", IF100, {"smoothing": 0.1}),
]


def _numeric_optimum(loss, label: int) -> torch.Tensor:
    """The balanced logits that minimise the loss on one image of class ``label`` (L-BFGS, float64)."""
    loss = loss.double()
    z = torch.zeros(1, loss.num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([z], lr=1, max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")
    target = torch.tensor([label])

    def closure():
        opt.zero_grad()
        value = loss(z, target)
        value.backward()
        return value

    opt.step(closure)
    return z.detach()[0]


@pytest.mark.parametrize(("name", "counts", "options"), CROSSINGS)
def test_smoothing_toward_the_prior_keeps_every_class_first_on_its_own_images(name, counts, options):
    paper = build_loss(name, counts, smoothing_toward="uniform", **options)
    default = build_loss(name, counts, **options)
    assert paper.smoothing_conflict() is not None and default.smoothing_conflict() is None
    # Minimised over the logits, the paper's smoothing puts the rarest class first on a head image;
    # the default puts each class first on its own images, where the closed form says (which the
    # test below checks for every class).
    assert int(_numeric_optimum(paper, 0).argmax()) == len(counts) - 1
    closed = default.balanced_optimum()
    for label in (0, len(counts) // 2, len(counts) - 1):  # the head, a middle class, the rarest
        z = _numeric_optimum(default, label)
        assert int(z.argmax()) == label
        runner_up = z[torch.arange(len(counts)) != label].max()
        expected = closed[label, label] - closed[label][torch.arange(len(counts)) != label].max()
        assert float(z[label] - runner_up) == pytest.approx(float(expected), abs=5e-3)
        if name == "bal-bce":  # the margin the module docstring derives, whatever the counts
            assert float(z[label] - runner_up) >= 2 * math.log(0.9 / 0.1) + math.log(0.9) - 1e-6


@pytest.mark.parametrize("name", ["bal-bce", "bal-ce"])
def test_smoothing_toward_the_prior_has_no_crossing_at_any_imbalance(name):
    for imbalance in (1, 10, 100, 1e3, 1e4, 1e6):
        for tau in (0.5, 1.0, 2.0, 4.0):
            counts = [max(1, round(1e6 * imbalance ** (-i / 9))) for i in range(10)]
            assert build_loss(name, counts, smoothing=0.1, tau=tau).smoothing_conflict() is None


def test_finetune_warns_of_the_conflict_with_the_class_names(caplog):
    from livt.training.config_sources import build_config
    from livt.training.finetune import _build_criterion

    overrides = {"init": "pretrain-run", "loss": "bal-bce", "smoothing_toward": "uniform"}
    cfg = build_config("finetune", recipe="fashion-mnist-lt-if1000", overrides=overrides)
    names = ["T-shirt/top", *[f"c{i}" for i in range(1, 9)], "Ankle boot"]
    with caplog.at_level("WARNING", logger="livt"):
        _build_criterion(cfg, IF1000, names)
    assert "'Ankle boot' +0.69 above that of 'T-shirt/top'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="livt"):
        _build_criterion(cfg, IF100, names)
    assert caplog.text == ""


@pytest.mark.parametrize(("name", "counts", "options"), CROSSINGS)
def test_the_recipes_defaults_never_warn_where_the_paper_smoothing_crosses(caplog, name, counts, options):
    from livt.training.config_sources import build_config, list_recipes
    from livt.training.finetune import _build_criterion

    for recipe in list_recipes():
        cfg = build_config("finetune", recipe=recipe, overrides={"init": "x", "loss": name, **options})
        assert cfg.smoothing_toward == "prior"
        with caplog.at_level("WARNING", logger="livt"):
            criterion = _build_criterion(cfg, counts, [f"c{i}" for i in range(10)])
        assert criterion.smoothing_toward == "prior" and caplog.text == "", recipe


def test_finetune_warns_of_the_softmax_conflict_under_the_paper_smoothing(caplog):
    from livt.training.config_sources import build_config
    from livt.training.finetune import _build_criterion

    overrides = {"init": "x", "loss": "bal-ce", "smoothing_toward": "uniform"}
    cfg = build_config("finetune", recipe="fashion-mnist-lt", overrides=overrides)
    with caplog.at_level("WARNING", logger="livt"):
        _build_criterion(cfg, IF100, [f"c{i}" for i in range(10)])
    assert (
        "bal-ce: label smoothing 0.1 toward uniform with tau 1" in caplog.text and "'c9' +0.04" in caplog.text
    )
