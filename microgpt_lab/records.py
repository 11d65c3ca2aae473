"""
records.py: what a command leaves on disk, and reading it back.

A record is a folder that one command owns while it works (a `.running` file marks the
claim) and fills with files that are written whole or not at all. Every file a command
reads back is checked as it is read: a wrong one is a one-line `UserError` naming the file
and the field. (Where a record came from, it notes too: see provenance.py.)
"""
import contextlib
import csv
import io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time

from microgpt_lab import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the project: results/ lives here
CLAIM = '.running'  # in a record's folder while a command writes it


# ---------------------------------------------------------------------------
# Writing: a file is written to a temporary name and renamed, so it is whole or absent.
def write_atomic(path, text):
    """text: a str, or bytes, or a function that returns the text's pieces, made as they
    are written (a large model's checkpoint, so that its whole text is never in memory at
    once)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, 'wb') if isinstance(text, bytes) else \
                open(tmp, 'w', encoding='utf-8', newline='') as f:
            f.writelines(text() if callable(text) else (text,))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def json_text(obj):
    """Strict JSON: a NaN or infinite number (a diverged loss) is written as null."""
    def strict(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: strict(v) for k, v in x.items()}
        return [strict(v) for v in x] if isinstance(x, (list, tuple)) else x
    return json.dumps(strict(obj), indent=2, allow_nan=False) + '\n'


def csv_text(header, rows):
    text = io.StringIO()
    w = csv.writer(text, lineterminator='\n')
    w.writerow(header)
    w.writerows(rows)
    return text.getvalue()


def write_json(path, obj):
    write_atomic(path, json_text(obj))


class Rescued(UserError):
    """A record that could not be written where it belonged, saved to a temporary folder
    instead (the message says where)."""


def write_record(out, files):
    """Write {name: text} (text as write_atomic takes it) into the folder out, in order;
    the last file (metrics.json) marks the record finished. If out cannot take them all (a full disk, a folder that became
    read-only), the ones written there are removed and the whole record goes to a new
    temporary folder instead, so no finished work is lost; Rescued says where."""
    written = []
    try:
        for name, text in files.items():
            write_atomic(os.path.join(out, name), text)
            written.append(name)
        return out
    except OSError as e:
        for name in written:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(out, name))
        why = f"cannot write the record to {out} ({e.strerror or e})"
    rescue = None
    try:
        rescue = tempfile.mkdtemp(prefix='microgpt-lab-record-')
        for name, text in files.items():
            write_atomic(os.path.join(rescue, name), text)
    except OSError as e:
        if rescue:
            shutil.rmtree(rescue, ignore_errors=True)  # no half of a record is left anywhere
        raise UserError(f"{why}, nor to a temporary folder ({e.strerror or e}): "
                        "the record is lost") from None
    raise Rescued(f"{why}; it was saved to {rescue} instead")


# ---------------------------------------------------------------------------
# Reading back: every file checked, every problem named by file and field.
def regular_file(path):
    """A UserError if path is there but is no file to read to its end: a FIFO or a device
    would keep a reader waiting, or reading, for ever."""
    if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
        raise UserError(f"{path} is not a regular file")


def read_json(path, what, in_folder=True):
    """The JSON object in path, which should be `what` (e.g. 'a run record': the folder of
    path, in_folder; or 'a checkpoint': the file itself)."""
    regular_file(path)
    try:
        with open(path, encoding='utf-8') as f:
            obj = json.load(f)
    except FileNotFoundError:
        hint = f": is {os.path.dirname(path) or '.'} {what}?" if in_folder else ''
        raise UserError(f"{path} not found{hint}") from None
    except IsADirectoryError:
        hint = 'not a file' if in_folder else 'pass the file in it'
        raise UserError(f"{path} is a directory, {hint}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path} is not readable JSON ({str(e)[:100]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} should hold a JSON object, not {type(obj).__name__}")
    return obj


def field(obj, key, path, kind, check=None, why=''):
    """obj[key], which must be of `kind` (a type or a tuple of types; a bool is not a
    number) and pass `check`; else a UserError naming path and key."""
    if key not in obj:
        raise UserError(f"{path}: {key} is missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds) \
            or (check is not None and not check(value)):
        raise UserError(f"{path}: {key} = {json.dumps(value)[:60]} is not {why or kinds[0].__name__}")
    return value


def read_losses(path, steps, counted_by='the checkpoint'):
    """The first `steps` losses of a losses.csv (step,loss; one row a step, from 1), as
    many as `counted_by` says the run made."""
    regular_file(path)
    try:
        with open(path, encoding='utf-8', newline='') as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise UserError(f"{path} not found: the run's losses are needed to continue it") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not readable ({e})") from None
    if not rows or rows[0] != ['step', 'loss']:
        raise UserError(f"{path}: the first line should be 'step,loss'")
    losses = []
    for i, row in enumerate(rows[1:steps + 1], 1):
        try:
            step, loss = int(row[0]), float(row[1])
            if len(row) != 2:
                raise ValueError('more than a step and a loss')
        except (ValueError, IndexError):
            raise UserError(f"{path}, line {i + 1}: not a step and a loss: {','.join(row)!r}") from None
        if step != i or not math.isfinite(loss) or loss < 0:  # a cross-entropy is >= 0
            raise UserError(f"{path}, line {i + 1}: expected step {i} and a finite loss >= 0")
        losses.append(loss)
    if len(losses) < steps:
        raise UserError(f"{path} has {len(losses)} steps, {counted_by} {steps}")
    return losses


def read_run(run_dir):
    """A finished run's metrics.json, the fields that summaries and plots use checked, and
    its losses.csv: the metrics, with 'losses' added."""
    path = os.path.join(run_dir, 'metrics.json')
    m = read_json(path, 'a run record')
    for key in ('final_loss', 'mean_loss_last_n', 'val_loss', 'steps_per_s', 'tokens_per_s'):
        field(m, key, path, (int, float, type(None)))
    m.setdefault('val_bpb', None)  # (records before issue 35: none)
    field(m, 'val_bpb', path, (int, float, type(None)))
    field(m, 'status', path, str)
    field(m, 'steps', path, int, lambda n: n >= 0, 'a step count')
    field(m, 'last_n', path, int)
    field(m, 'val_history', path, list, lambda h: all(
        isinstance(e, list) and len(e) in (2, 3, 4) and all(type(x) in (int, float) for x in e)
        for e in h), 'a list of [step, validation loss, training time, bits per byte]')
    shares = m.get('samples') or {}
    if not isinstance(shares, dict) or set(shares) - {'train', 'val', 'new'}:
        raise UserError(f"{path}: samples should be the shares of train, val and new samples")
    m['samples'] = shares
    if m['status'] == 'completed':
        if m['steps'] < 1:
            raise UserError(f"{path}: a completed run has steps >= 1, not {m['steps']}")
        m['losses'] = read_losses(os.path.join(run_dir, 'losses.csv'), m['steps'], 'metrics.json')
    return m


# ---------------------------------------------------------------------------
# Folders: a command owns the folder it writes, so that two at once cannot mix records.
def claim(folder, must_be_empty=True):
    """Mark folder as this process's by creating folder/.running exclusively, with its
    process id and machine. Fails, with a UserError, if a live command holds it, or
    (must_be_empty) if it holds anything. A claim left by a process that is gone (killed
    with -9, a machine that rebooted) is taken over, with a note on stderr."""
    path = os.path.join(folder, CLAIM)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        owner = dead_owner(path)
        if owner is None:
            raise UserError(f"{folder} is in use by another command (if none is running, "
                            f"remove {path})") from None
        with contextlib.suppress(OSError):  # a note: a stderr that fails changes nothing
            print(f"note: {folder} was claimed by process {owner}, which is gone: taken over",
                  file=sys.stderr)
        release(folder)
        return claim(folder, must_be_empty)
    except OSError as e:
        raise UserError(f"cannot write in {folder}: {e.strerror}") from None
    with os.fdopen(fd, 'w') as f:
        f.write(f"{os.getpid()} {platform.node()}\n")
    if must_be_empty and set(os.listdir(folder)) != {CLAIM}:
        release(folder)
        raise UserError(f"{folder} is not empty; choose another --out")


def dead_owner(path):
    """The process id in the claim file at path if that process is gone from this machine;
    None while it may be alive (or the claim is another machine's, or unreadable)."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read().strip()
        if not text:  # killed between making the claim and writing in it
            return 'unknown' if time.time() - os.path.getmtime(path) > 60 else None
        pid, _, host = text.partition(' ')
        pid = int(pid)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (host and host != platform.node()) or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except OSError:  # alive, another user's
        return None
    return None


def release(folder):
    with contextlib.suppress(OSError):
        os.remove(os.path.join(folder, CLAIM))


@contextlib.contextmanager
def owned(folder, must_be_empty=True, made=False):
    """Claim folder for the work within; release it after. A folder this command `made`
    that the work leaves empty (it failed before writing anything) is removed."""
    claim(folder, must_be_empty)
    try:
        yield folder
    finally:
        release(folder)
        if made and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


def results_root():
    """results/ of the project when run from its checkout; else results/ where the user is
    (an installed copy must not write into site-packages)."""
    mine = os.path.join(ROOT, 'results')
    return mine if os.path.isdir(mine) else os.path.abspath('results')


def new_folder(out, default, label, start):
    """The folder for a new record, created if need be: `out`, or a fresh one under
    results/default named for the start time and label. Returns (path, whether this call
    made it); claim it with owned()."""
    if out is None:
        base = os.path.join(results_root(), default, f"{start:%Y%m%d-%H%M%S}-{label}")
        for i in range(1, 1000):  # a command started in the same second: take the next name
            path = base if i == 1 else f"{base}-{i}"
            try:
                os.makedirs(path)
                return path, True
            except FileExistsError:
                continue
            except OSError as e:
                raise UserError(f"cannot create {path}: {e.strerror}") from None
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder")
    made = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror}") from None
    return out, made
