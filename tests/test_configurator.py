"""
configurator.configure(defaults, argv): config files, then --key=value overrides, with one-line errors.
"""

import glob
import os
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from configurator import configure  # noqa: E402

DEFAULTS = dict(
    out_dir='out',
    wandb_run_name='',
    init_from='scratch',
    learning_rate=6e-4,
    min_lr=6e-5,
    batch_size=12,
    block_size=1024,
    max_iters=600000,
    compile=False,
    decay_lr=True,
    pause_rate=0.1,
    anything=None,
)


def error_of(argv, defaults=DEFAULTS):
    """The one-line message configure exits with."""
    with pytest.raises(SystemExit) as exc:
        configure(defaults, argv)
    msg = exc.value.code
    assert isinstance(msg, str), msg  # a message, not a bare status code
    assert '\n' not in msg.strip(), msg
    assert msg.startswith('error: '), msg
    return msg


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_defaults_are_copied_not_mutated():
    before = dict(DEFAULTS)
    config = configure(DEFAULTS, ['--batch_size=3'])
    assert config['batch_size'] == 3 and DEFAULTS == before
    assert configure(DEFAULTS, []) == DEFAULTS and configure(DEFAULTS, []) is not DEFAULTS


def test_unknown_key_in_override_names_closest_keys():
    msg = error_of(['--learning_rat=1e-3'])
    assert "'learning_rat'" in msg
    assert 'learning_rate' in msg and 'closest' in msg


def test_unknown_key_in_config_file_names_closest_keys(tmp_path):
    path = write(tmp_path, 'cfg.py', """
        batch_size = 4
        bach_size = 8
    """)
    msg = error_of([path])
    assert "'bach_size'" in msg and 'batch_size' in msg


def test_unknown_key_without_close_match_is_still_one_line():
    msg = error_of(['--zzzzzz=1'])
    assert "'zzzzzz'" in msg


def test_int_accepted_for_float_key():
    config = configure(DEFAULTS, ['--learning_rate=1', '--min_lr=0'])
    assert config['learning_rate'] == 1.0 and type(config['learning_rate']) is float
    assert config['min_lr'] == 0.0 and type(config['min_lr']) is float


def test_infinity_accepted_for_float_key():
    """inf is no Python literal, but a float knob may need it (sample.py's --think_threshold=inf)."""
    config = configure(DEFAULTS, ['--learning_rate=inf', '--min_lr=-inf'])
    assert config['learning_rate'] == float('inf') and config['min_lr'] == -float('inf')
    with pytest.raises(SystemExit, match="expects float"):
        configure(DEFAULTS, ['--learning_rate=infinite'])


def test_int_accepted_for_float_key_in_config_file(tmp_path):
    path = write(tmp_path, 'cfg.py', "learning_rate = 2\n")
    config = configure(DEFAULTS, [path])
    assert config['learning_rate'] == 2.0 and type(config['learning_rate']) is float


@pytest.mark.parametrize('value', ['1.5', '2.0', '1e3'])
def test_float_rejected_for_int_key(value):
    msg = error_of([f'--batch_size={value}'])
    assert "'batch_size'" in msg and 'int' in msg and value in msg


def test_float_rejected_for_int_key_in_config_file(tmp_path):
    path = write(tmp_path, 'cfg.py', "max_iters = 1e4\n")
    msg = error_of([path])
    assert "'max_iters'" in msg and 'int' in msg


def test_booleans():
    config = configure(DEFAULTS, ['--compile=True', '--decay_lr=False'])
    assert config['compile'] is True and config['decay_lr'] is False


@pytest.mark.parametrize('value', ['1', '0', 'true', 'yes', "'True'"])
def test_non_boolean_rejected_for_bool_key(value):
    msg = error_of([f'--compile={value}'])
    assert "'compile'" in msg and 'bool' in msg


@pytest.mark.parametrize('arg,key', [
    ('--batch_size=abc', 'batch_size'),
    ('--batch_size=True', 'batch_size'),  # bool is not an int here
    ('--learning_rate=fast', 'learning_rate'),
    ('--learning_rate=False', 'learning_rate'),
    ('--batch_size=[1, 2]', 'batch_size'),
])
def test_wrong_type_rejected_with_one_line(arg, key):
    msg = error_of([arg])
    assert f"'{key}'" in msg


def test_values_may_contain_equals():
    config = configure(DEFAULTS, ['--wandb_run_name=a=b', '--out_dir=x=1=2'])
    assert config['wandb_run_name'] == 'a=b' and config['out_dir'] == 'x=1=2'


@pytest.mark.parametrize('raw', ['2024', '1e-3', '3.5', 'True', '[1,2]', '0x10'])
def test_string_key_keeps_number_like_value_as_string(raw):
    config = configure(DEFAULTS, [f'--wandb_run_name={raw}'])
    assert config['wandb_run_name'] == raw, f'--wandb_run_name={raw} gave {config["wandb_run_name"]!r}'


def test_none_string_stays_string_for_string_key():
    assert configure(DEFAULTS, ['--wandb_run_name=None'])['wandb_run_name'] == 'None'


@pytest.mark.parametrize('arg', ['--batch_size=None', '--learning_rate=None', '--compile=None'])
def test_none_rejected_for_typed_key(arg):
    error_of([arg])


def test_none_rejected_for_typed_key_in_config_file(tmp_path):
    error_of([write(tmp_path, 'cfg.py', "batch_size = None\n")])


def test_plain_and_quoted_strings():
    config = configure(DEFAULTS, ['--init_from=gpt2', "--out_dir='out-run'", '--wandb_run_name=my run'])
    assert config['init_from'] == 'gpt2' and config['out_dir'] == 'out-run'
    assert config['wandb_run_name'] == 'my run'


def test_none_default_takes_anything():
    assert configure(DEFAULTS, ['--anything=3'])['anything'] == 3
    assert configure(DEFAULTS, ['--anything=abc'])['anything'] == 'abc'
    assert configure(DEFAULTS, ['--anything=[1, 2]'])['anything'] == [1, 2]


def test_override_without_value_is_one_line():
    msg = error_of(['--compile'])
    assert '--compile' in msg


def test_later_arguments_win(tmp_path):
    a = write(tmp_path, 'a.py', "batch_size = 4\nblock_size = 64\n")
    b = write(tmp_path, 'b.py', "batch_size = 8\n")
    config = configure(DEFAULTS, [a, '--block_size=32', b, '--batch_size=16'])
    assert config['batch_size'] == 16 and config['block_size'] == 32
    config = configure(DEFAULTS, ['--batch_size=16', a])
    assert config['batch_size'] == 4


def test_config_file_execs_base_config_via_file(tmp_path):
    """Like config/train_shakespeare_char_cpu.py: exec a base config next to it, then override."""
    write(tmp_path, 'base.py', """
        out_dir = 'out-base'
        batch_size = 64
        block_size = 256
        compile = True
        learning_rate = 1e-3
    """)
    child = write(tmp_path, 'child.py', """
        import os
        exec(open(os.path.join(os.path.dirname(__file__), 'base.py')).read())

        out_dir = 'out-child'
        batch_size = 12
        compile = False
    """)
    config = configure(DEFAULTS, [child])
    assert config['out_dir'] == 'out-child' and config['batch_size'] == 12 and config['compile'] is False
    assert config['block_size'] == 256 and config['learning_rate'] == 1e-3  # from the base
    # relative path, run from the config's directory's parent (as `python train.py config/x.py`)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path.parent)
        rel = os.path.join(tmp_path.name, 'child.py')
        assert configure(DEFAULTS, [rel]) == config
    finally:
        os.chdir(cwd)


def test_config_file_may_use_helpers_and_private_names(tmp_path):
    path = write(tmp_path, 'cfg.py', """
        import math
        _scale = 4
        def double(x):
            return 2 * x
        class Note:
            pass
        batch_size = double(_scale)
        learning_rate = math.sqrt(1e-6)
    """)
    config = configure(DEFAULTS, [path])
    assert config['batch_size'] == 8 and config['learning_rate'] == pytest.approx(1e-3)


def test_config_file_may_import_builtin_functions(tmp_path):
    path = write(tmp_path, 'cfg.py', """
        from math import sqrt
        learning_rate = sqrt(1e-6)
    """)
    assert configure(DEFAULTS, [path])['learning_rate'] == pytest.approx(1e-3)


def test_missing_config_file_is_one_line(tmp_path):
    missing = str(tmp_path / 'nope.py')
    msg = error_of([missing])
    assert 'nope.py' in msg and 'not found' in msg


def test_wrong_type_in_config_file_is_one_line(tmp_path):
    path = write(tmp_path, 'cfg.py', "out_dir = 2024\n")
    msg = error_of([path])
    assert "'out_dir'" in msg and 'str' in msg


# ---- the repo's own recipes against train.py's defaults -----------------------------------------

CONFIGS = sorted(glob.glob(os.path.join(REPO, 'config', '*.py')))


@pytest.fixture(scope='module')
def train_defaults():
    training = pytest.importorskip('training')
    return training.DEFAULTS


@pytest.mark.parametrize('path', CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_repo_configs_load(path, train_defaults):
    config = configure(train_defaults, [path])
    assert set(config) == set(train_defaults)
    for key, value in config.items():
        default = train_defaults[key]
        if default is not None and value is not None:
            assert type(value) is type(default), (key, value)


def test_cpu_recipe_extends_gpu_recipe(train_defaults):
    path = os.path.join(REPO, 'config', 'train_shakespeare_char_cpu.py')
    if not os.path.exists(path):
        pytest.skip('config/train_shakespeare_char_cpu.py not present')
    config = configure(train_defaults, [path, '--batch_size=32'])
    assert config['device'] == 'cpu' and config['compile'] is False and config['batch_size'] == 32
    assert config['block_size'] == 64 and config['n_layer'] == 4
    assert config['dataset'] == 'shakespeare_char'  # only set in the base recipe
