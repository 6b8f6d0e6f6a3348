"""
Config as in nanoGPT: plain Python config files, then --key=value overrides.

    python train.py config/train_shakespeare_char_cpu.py --batch_size=32 --compile=False

Unlike nanoGPT's exec-into-globals, every key must exist in the script's defaults, and every value
must have the default's type (an int is fine for a float; None defaults take anything). Mistakes
exit with one line that says what to do:

    error: unknown config key 'learning_rat' (closest: learning_rate, min_lr)
"""

import ast
import difflib
import sys


def fail(msg):
    """Stop with the one-line error every script of this repo gives for bad input."""
    raise SystemExit(f"error: {msg}")


def _unknown(key, defaults):
    close = difflib.get_close_matches(key, list(defaults), n=3, cutoff=0.5)
    hint = f" (closest: {', '.join(close)})" if close else ""
    fail(f"unknown config key {key!r}{hint}")


def _coerce(key, value, default, raw=None):
    """The value in the default's type, or a one-line error."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.lower().lstrip('+-') in ('inf', 'infinity'):  # not a Python literal
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if raw is not None:  # --out_dir=2024 means the string '2024'
            return raw
    elif isinstance(value, type(default)):
        return value
    shown = raw if raw is not None else repr(value)
    fail(f"config key {key!r} expects {type(default).__name__} (like {default!r}), got {shown}")


def configure(defaults, argv=None):
    """Apply config files and --key=value overrides in argv to a copy of defaults; return it."""
    argv = sys.argv[1:] if argv is None else argv
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith('--'):
            # a config file: plain Python whose top-level assignments set keys
            try:
                with open(arg) as f:
                    source = f.read()
            except OSError:
                fail(f"config file {arg!r} not found (arguments are config files or --key=value)")
            namespace = {'__file__': arg}  # lets a config exec a base config next to it
            try:
                exec(compile(source, arg, 'exec'), namespace)
            except Exception as e:  # a syntax error, a base config that is missing, ...
                fail(f"config file {arg!r} failed: {type(e).__name__}: {e}")
            for key, value in namespace.items():
                if key.startswith('_') or callable(value) or type(value).__name__ == 'module':
                    continue
                if key not in defaults:
                    _unknown(key, defaults)
                config[key] = _coerce(key, value, defaults[key])
        else:
            if '=' not in arg:
                fail(f"override {arg!r} needs a value: --key=value")
            key, raw = arg[2:].split('=', 1)  # values may themselves contain '='
            if key not in defaults:
                _unknown(key, defaults)
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw  # a bare string such as --out_dir=out-run or --init_from=gpt2
            config[key] = _coerce(key, value, defaults[key], raw)
    return config
