"""Task arithmetic, TIES, DARE, truncation and concatenation against hand and direct computations."""

import pytest
import torch

from rankwise.errors import ConfigError
from rankwise.linalg.merging import concatenate_factors, dare, magnitude_trim, task_arithmetic, ties, truncate

# Hand-built deltas: trimming each to density 0.5 keeps its 3 largest magnitudes.
D1 = torch.tensor([[3.0, -1.0, 0.5], [2.0, -4.0, 0.1]])   # keeps 3, 2, -4
D2 = torch.tensor([[-2.0, 5.0, 0.2], [-1.0, -3.0, 0.3]])  # keeps -2, 5, -3
D3 = torch.tensor([[1.0, 2.0, -6.0], [0.4, 0.2, 0.1]])    # keeps 1, 2, -6


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_task_arithmetic_is_the_weighted_sum_and_normalize_divides_by_the_weight_sum():
    deltas = [_randn(4, 5, seed=s) for s in range(3)]
    weights = [0.5, 2.0, -1.0]
    expected = 0.5 * deltas[0] + 2.0 * deltas[1] - deltas[2]
    torch.testing.assert_close(task_arithmetic(deltas, weights), expected)
    torch.testing.assert_close(task_arithmetic(deltas, weights, normalize=True), expected / 1.5)


def test_trim_keeps_exactly_int_density_times_numel_largest_entries():
    delta = _randn(10, 10)
    trimmed = magnitude_trim(delta, 0.29)  # 0.29 * 100 = 28.999…: mergekit's int() keeps 28
    kept = trimmed != 0
    assert int(kept.sum()) == 28
    assert delta[kept].abs().min() > delta[~kept].abs().max()
    torch.testing.assert_close(trimmed[kept], delta[kept])
    assert torch.equal(magnitude_trim(delta, 1.0), delta)


def test_ties_trims_elects_the_sign_and_takes_the_disjoint_mean_by_hand():
    # per entry: trimmed values, their sum's sign, and the mean of the agreeing ones
    # (0,0): 3,-2,1 → + → (3+1)/2   (0,1): 0,5,2 → + → 3.5   (0,2): 0,0,-6 → − → -6
    # (1,0): 2,0,0 → + → 2          (1,1): -4,-3,0 → − → -3.5 (1,2): all trimmed → 0
    expected = torch.tensor([[2.0, 3.5, -6.0], [2.0, -3.5, 0.0]])
    torch.testing.assert_close(ties([D1, D2, D3], [1, 1, 1], density=0.5), expected)
    # weight 2 on D1: the weighted entries vote, and the divisor sums the agreeing weights
    expected = torch.tensor([[7 / 3, 3.5, -6.0], [2.0, -11 / 3, 0.0]])
    torch.testing.assert_close(ties([D1, D2, D3], [2, 1, 1], density=0.5), expected)
    # without normalize the agreeing weighted entries are summed
    expected = torch.tensor([[7.0, 7.0, -6.0], [4.0, -11.0, 0.0]])
    torch.testing.assert_close(ties([D1, D2, D3], [2, 1, 1], density=0.5, normalize=False), expected)


def test_ties_weights_multiply_before_the_election_and_count_takes_the_majority_of_signs():
    a, b = torch.tensor([1.0]), torch.tensor([-0.8])
    # unweighted the sum is +0.2; weighted (0.5, 1) it is -0.3, so b's sign wins
    torch.testing.assert_close(ties([a, b], [0.5, 1.0], density=1.0), torch.tensor([-0.8]))
    x, y, z = torch.tensor([1.0]), torch.tensor([-5.0]), torch.tensor([1.0])
    torch.testing.assert_close(ties([x, y, z], [1, 1, 1], 1.0, consensus="sum"), torch.tensor([-5.0]))
    torch.testing.assert_close(ties([x, y, z], [1, 1, 1], 1.0, consensus="count"), torch.tensor([1.0]))
    # a zero sum elects +
    torch.testing.assert_close(ties([x, -x], [1, 1], 1.0), torch.tensor([1.0]))


def test_dare_keeps_entries_rescaled_by_one_over_density_and_l1_rescale_keeps_the_norm():
    delta = _randn(40, 50)
    dropped = dare([delta], [1.0], 0.3, torch.Generator().manual_seed(0))
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], delta[kept] / 0.3)
    assert abs(kept.double().mean().item() - 0.3) < 0.05
    l1 = dare([delta], [1.0], 0.3, torch.Generator().manual_seed(0), rescale="l1")
    assert torch.equal(l1 != 0, kept)  # same generator state, same mask
    torch.testing.assert_close(l1.abs().sum(), delta.abs().sum())


def test_dare_linear_is_unbiased_over_seeds():
    deltas = [_randn(6, 8, seed=s) for s in range(3)]
    weights = [0.7, 1.2, -0.5]
    density, seeds = 0.4, 3000
    gen = torch.Generator().manual_seed(0)
    mean = sum(dare(deltas, weights, density, gen) for _ in range(seeds)) / seeds
    expected = task_arithmetic(deltas, weights)
    # each entry's sampling std: sqrt(Σ w_i² Δ_i² (1 − p) / p / seeds)
    std = (sum((w * d) ** 2 for w, d in zip(weights, deltas)) * (1 - density) / density / seeds).sqrt()
    assert ((mean - expected).abs() / std).max() < 5


def test_dare_draws_only_from_its_generator():
    deltas = [_randn(5, 5, seed=s) for s in range(2)]
    a = dare(deltas, [1, 1], 0.5, torch.Generator().manual_seed(3), sign_election=True)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    b = dare(deltas, [1, 1], 0.5, torch.Generator().manual_seed(3), sign_election=True)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), before)


def test_dare_at_density_one_is_task_arithmetic_or_ties_without_a_trim():
    deltas = [_randn(5, 7, seed=s) for s in range(3)]
    weights = [1.0, 0.5, 2.0]
    torch.testing.assert_close(dare(deltas, weights, 1.0, None), task_arithmetic(deltas, weights))
    torch.testing.assert_close(dare(deltas, weights, 1.0, None, sign_election=True),
                               ties(deltas, weights, 1.0, normalize=False))


def test_one_input_with_weight_one_comes_back():
    delta = _randn(6, 4)
    gen = torch.Generator().manual_seed(0)
    for merged in (task_arithmetic([delta], [1.0]), ties([delta], [1.0], 1.0), dare([delta], [1.0], 1.0, gen),
                   dare([delta], [1.0], 1.0, gen, sign_election=True)):
        torch.testing.assert_close(merged, delta)
    torch.testing.assert_close(ties([delta], [1.0], 0.5), magnitude_trim(delta, 0.5))
    B, A = _randn(6, 2, seed=1), _randn(2, 4, seed=2)
    cat_B, cat_A = concatenate_factors([(B, A)], [1.0])
    assert torch.equal(cat_B, B) and torch.equal(cat_A, A)
    B, A = truncate(delta, 4)
    torch.testing.assert_close(B @ A, delta.float(), rtol=1e-5, atol=1e-5)


def test_truncate_is_the_best_rank_r_approximation():
    delta = _randn(12, 9)
    B, A = truncate(delta, 3)
    assert B.shape == (12, 3) and A.shape == (3, 9)
    dropped = torch.linalg.svdvals(delta)[3:]
    torch.testing.assert_close(torch.linalg.matrix_norm(delta.float() - B @ A), dropped.norm().float(),
                               rtol=1e-5, atol=1e-5)


def test_cat_is_exact_at_the_summed_rank():
    factors = [(_randn(8, r, seed=r), _randn(r, 5, seed=10 + r)) for r in (2, 3, 1)]
    weights = [0.5, -1.5, 2.0]
    B, A = concatenate_factors(factors, weights)
    assert B.shape == (8, 6) and A.shape == (6, 5)
    torch.testing.assert_close(B @ A, sum(w * b @ a for (b, a), w in zip(factors, weights)))


@pytest.mark.parametrize("call, match", [
    (lambda d: task_arithmetic(d, [1.0]), "2 weights|1 weights for 2"),
    (lambda d: ties(d, [1, 1], 0.0), "density 0.0 of input 0"),
    (lambda d: ties(d, [1, 1], [0.5, 1.5]), "density 1.5 of input 1"),
    (lambda d: ties(d, [1, 1], float("nan")), "outside"),
    (lambda d: ties(d, [1, 1], 0.01), "keeps no entry of input 0"),
    (lambda d: ties(d, [1, 1], [0.5]), "1 densities for 2 inputs"),
    (lambda d: ties(d, [1, 1], 0.5, consensus="vote"), "consensus"),
    (lambda d: dare(d, [1, 1], 0.5, None, rescale="l2"), "rescale"),
    (lambda d: task_arithmetic([d[0], d[1][:, :3]], [1, 1]), "input 1 has shape"),
    (lambda d: task_arithmetic([], []), "at least one"),
    (lambda d: truncate(d[0], 5), "rank 5"),
    (lambda d: concatenate_factors([(d[0], d[1]), (d[0][:, :3], d[1])], [1, 1]), "input 1 has B"),
])
def test_bad_inputs_raise_config_errors_naming_the_input(call, match):
    deltas = [_randn(4, 4, seed=s) for s in range(2)]
    with pytest.raises(ConfigError, match=match):
        call(deltas)
