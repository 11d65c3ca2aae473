"""attention_maps.py: the attention weights of every layer and head, from the forward pass
training uses, as text heatmaps and a picture."""
import numpy as np
import cli
from microgpt_lab import attention_maps, checkpoint
from conftest import main_output, one_line_error, train_small


def test_attention_shows_every_layer_and_head_in_text_and_in_a_picture(small):
    assert train_small(small / 'run', '--n-layer', '2') == 0
    code, out, err = main_output(cli.main, 'attention', '--checkpoint', 'run/checkpoint.json',
                                 '--text', 'anna', '--png', 'att.png')
    assert code == 0, err
    assert out.count('--- layer ') == 2 * 2  # layers x heads
    first = out.split('--- layer 1, head 1')[1].splitlines()[1:7]
    assert first[0].split() == ['B', 'a', 'n', 'n', 'a'] and first[1].startswith('BOS  @')
    assert all(len(line.split()) <= i + 2 for i, line in enumerate(first[1:]))  # causal rows
    assert (small / 'att.png').read_bytes()[:4] == b'\x89PNG'
    code, _, err = main_output(cli.main, 'attention', '--checkpoint', 'run/checkpoint.json',
                               '--text', 'a' * 20)
    assert code == 1 and one_line_error(err) and "context holds 16" in err


def test_a_character_the_model_never_saw_is_one_line(small, run):
    code, _, err = main_output(cli.main, 'attention', '--checkpoint', 'run/checkpoint.json',
                               '--text', 'an!')
    assert code == 1 and one_line_error(err) and "'!'" in err, err


def test_a_text_model_reads_a_passage_without_bos_its_rows_summing_to_one(small):
    (small / 'text.txt').write_text("Speak, speak.\nYou are all resolved rather to die.\n" * 8)
    assert train_small(small / 'run', '--mode', 'tensor', '--data-format', 'text', '--block-size',
                       '8', '--batch-size', '4', '--length', '10', data='text.txt') == 0
    labels, maps = attention_maps.attention_weights(checkpoint.load('run/checkpoint.json'),
                                                    'ak, s\n')
    assert labels == ['a', 'k', ',', '␣', 's', '⏎'] and len(maps) == 1
    for heads in maps:
        assert heads.shape == (2, 6, 6)
        assert np.allclose(heads.sum(-1), 1) and np.all(heads[:, np.triu_indices(6, 1)[0],
                                                                 np.triu_indices(6, 1)[1]] == 0)
    code, _, err = main_output(cli.main, 'attention', '--checkpoint', 'run/checkpoint.json',
                               '--text', '')  # a document reads BOS alone; a passage needs text
    assert code == 1 and one_line_error(err) and '--text is empty' in err


def test_heatmap_text_shades_each_weight_by_its_tenth():
    weights = np.array([[1.0, 0, 0], [0.05, 0.95, 0], [0.25, 0.35, 0.4]])
    assert attention_maps.heatmap_text(weights, ['BOS', 'a', '␣']).splitlines() == [
        '     B a ␣',
        'BOS  @    ',
        '  a    @  ',
        '  ␣  : - =',
    ]


def test_a_checkpoint_that_is_not_a_regular_file_is_refused_at_once(small):
    import os
    os.mkfifo(small / 'fifo.json')
    code, _, err = main_output(cli.main, 'attention', '--checkpoint', 'fifo.json', '--text', 'an')
    assert code == 1 and one_line_error(err) and 'fifo.json is not a regular file' in err, err


def test_the_picture_must_be_a_png_so_that_it_cannot_replace_the_checkpoint(small, run):
    before = (small / 'run' / 'checkpoint.json').read_bytes()
    code, _, err = main_output(cli.main, 'attention', '--checkpoint', 'run/checkpoint.json',
                               '--text', 'an', '--png', 'run/checkpoint.json')
    assert code == 1 and one_line_error(err) and 'ends in .png' in err
    assert (small / 'run' / 'checkpoint.json').read_bytes() == before


def test_a_long_text_keeps_the_terminal_and_the_picture_in_bounds(small):
    (small / 'text.txt').write_text('to be or not to be, that is the question\n' * 20)
    assert train_small(small / 'run', '--mode', 'tensor', '--data-format', 'text', '--block-size',
                       '200', '--n-head', '4', '--batch-size', '2', '--steps', '2', '--length', '0',
                       data='text.txt') == 0
    code, out, err = main_output(cli.main, 'attention', '--checkpoint', 'run/checkpoint.json',
                                 '--text', ('to be or not to be, ' * 10)[:190], '--png', 'a.png')
    assert code == 0, err
    assert 'text heatmaps skipped: 190 positions' in out and out.count('\n') < 5
    from PIL import Image
    assert max(Image.open(small / 'a.png').size) <= attention_maps.MAX_INCHES * 110 + 1


def test_more_maps_than_a_picture_shows_are_refused_before_the_forward_pass(small):
    assert train_small(small / 'run', '--mode', 'tensor', '--n-layer', '13', '--n-head', '4',
                       '--n-embd', '8', '--steps', '1', '--batch-size', '2') == 0
    code, _, err = main_output(cli.main, 'attention', '--checkpoint', 'run/checkpoint.json',
                               '--text', 'anna')
    assert code == 1 and one_line_error(err) and '13 layers x 4 heads' in err
