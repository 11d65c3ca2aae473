"""scale.py: bench's tables of a size, or the thread count, against the base config, from the
rows that bench timed."""
from microgpt_lab import scale


def row(mode, tokens, share=0.5):
    return dict(mode=mode, batch_size=4, tokens_per_s=tokens, num_params=2e6, gflops_per_s=10.0,
                share_of_peak=share, peak_memory_mb=100.0, matmul_peak_gflops_per_s=20.0)


def test_each_size_sits_beside_the_base_config_in_order_with_pytorch_where_timed():
    cfg = dict(batch_size=4, n_embd=16, vary=[('n_embd', [32, 8])])
    rows = [row('tensor', 1000.0), row('tensor n-embd=32', 500.0), row('tensor n-embd=8', 1500.0),
            row('torch', 2000.0)]
    assert [(v, ours['mode'], torch and torch['mode']) for _, v, ours, torch in scale.scale_points(rows, cfg, ['n_embd'])] \
        == [(8, 'tensor n-embd=8', None), (16, 'tensor', 'torch'), (32, 'tensor n-embd=32', None)]
    table = scale.scale_table(rows, cfg, ['n_embd']).splitlines()
    assert table[5].startswith('| n_embd | 16 | 2.00M | 1,000 | 2,000 | **0.50×** |')


def test_the_thread_counts_speed_up_over_the_fewest():
    cfg = dict(batch_size=4, threads=1, vary=[('threads', [1, 2])])
    rows = [row('tensor', 100.0), row('tensor threads=2', 180.0, None)]
    lines = scale.scaling_table(rows, cfg).splitlines()
    assert lines[4].startswith('| 1 | 100 | n/a | n/a | 50% |') and lines[4].endswith('| 1.00× | n/a |')
    assert lines[5].startswith('| 2 | 180 | n/a | n/a | not credible |') and lines[5].endswith('| 1.80× | n/a |')
