"""stopping.py: a signal stops the work where it is consistent: a run after its step, any
other command at once, each with its exit status; an ablation's runs elsewhere by a flag."""
import os
import signal
import threading

import pytest

from microgpt_lab import stopping


def test_within_stop_signals_a_signal_is_noted_not_raised_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with stopping.stop_signals() as caught:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
        assert caught == [signal.SIGTERM, signal.SIGHUP]
    assert signal.getsignal(signal.SIGTERM) is before


def test_within_ending_signals_sigterm_and_sighup_end_the_command_as_ctrl_c_does():
    for signum in (signal.SIGTERM, signal.SIGHUP):
        with pytest.raises(stopping.Signalled) as e:
            with stopping.ending_signals():
                os.kill(os.getpid(), signum)
        assert e.value.signum == signum and isinstance(e.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_signal_wrapped_in_a_librarys_error_is_found_and_gives_its_status(capsys):
    try:
        try:
            raise stopping.Signalled(signal.SIGHUP)
        except stopping.Signalled as e:
            raise RuntimeError('error during unpickling') from e
    except RuntimeError as wrapped:
        assert stopping.interrupted(stopping.interruption(wrapped)) == 129
    assert capsys.readouterr().err.strip() == 'SIGHUP'
    assert stopping.interruption(ValueError()) is None
    assert stopping.interrupted(KeyboardInterrupt()) == 130


def test_held_signals_wait_and_arrive_on_leaving():
    with stopping.stop_signals() as caught:
        with stopping.signals_held():  # (held in this thread: sent to it, not to another)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
            assert caught == []
        assert caught == [signal.SIGTERM]


def test_the_stop_file_says_which_signal_stopped_the_runs(tmp_path):
    flag = stopping.StopFile(str(tmp_path / '.stop'))
    assert not flag.is_set() and flag.signum() is None
    flag.set(signal.SIGTERM)
    flag.set(signal.SIGINT)  # the first one stays
    assert flag.is_set() and stopping.StopFile(str(tmp_path / '.stop')).signum() == signal.SIGTERM
    assert stopping.StopFile(str(tmp_path / 'none'), caught=[signal.SIGINT]).is_set()
