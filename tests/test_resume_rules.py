"""What ``--resume`` accepts from an edited config (issue 18 item 7), without a training run:
a changed ``train.batch_size`` or fewer epochs than done is refused naming the field; a changed
schedule (epochs, lr, ...) is followed from the resumed update. The real runs are in test_train.py."""
from __future__ import annotations

import dataclasses

import torch

from deit_core.checkpoint import batch_size_refusal, epochs_refusal, schedule_changes
from deit_core.config import TrainConfig
from deit_core.train import build_optimization, follow_schedule

OLD = TrainConfig(epochs=10, lr=5e-4, warmup_epochs=2, batch_size=16)


def saved(t: TrainConfig, epoch: int = 3) -> dict:
    return {"config": {"train": dataclasses.asdict(t)}, "epoch": epoch}


def test_a_changed_batch_size_is_refused_naming_the_field():
    assert batch_size_refusal(saved(OLD), 16) is None
    text = batch_size_refusal(saved(OLD), 32)
    assert text is not None and "train.batch_size 16" in text and "32" in text
    assert batch_size_refusal({"config": {}}, 32) is None  # a checkpoint without its config: nothing to compare


def test_fewer_epochs_than_done_are_refused():
    assert epochs_refusal(saved(OLD, epoch=3), 3) is None
    assert epochs_refusal(saved(OLD, epoch=3), 20) is None
    text = epochs_refusal(saved(OLD, epoch=3), 2)
    assert text is not None and "train.epochs to at least 3" in text


def test_schedule_changes_name_each_field():
    assert schedule_changes(saved(OLD), OLD) == []
    new = dataclasses.replace(OLD, epochs=20, lr=1e-4, batch_size=32)  # batch size is refused elsewhere, not listed
    assert schedule_changes(saved(OLD), new) == ["train.epochs 10 -> 20", "train.lr 0.0005 -> 0.0001"]


def lrs(scheduler, optimizer, updates) -> list[float]:
    out = []
    for u in updates:
        scheduler.step_update(u)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_a_resumed_run_follows_the_new_schedule_from_the_resumed_update():
    per_epoch, done = 5, 15  # resumed after 3 of 10 epochs
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt, sched, _ = build_optimization(model, OLD, 512, per_epoch)
    model(torch.randn(4, 3)).sum().backward()
    for u in range(1, done + 1):
        opt.step()
        sched.step_update(u)
    saved_optimizer = opt.state_dict()

    new = dataclasses.replace(OLD, epochs=20, lr=1e-3)
    fresh_opt, fresh_sched, _ = build_optimization(torch.nn.Linear(3, 2), new, 512, per_epoch)
    expected = lrs(fresh_sched, fresh_opt, range(done, 20 * per_epoch + 1))  # the new schedule from update 15 on

    opt2, sched2, _ = build_optimization(model, new, 512, per_epoch)
    opt2.load_state_dict(saved_optimizer)  # what restore() does: the old run's param groups and moments
    assert opt2.param_groups[0]["lr"] != expected[0]  # loaded: still the old schedule's lr
    follow_schedule(sched2, opt2, done)
    assert opt2.param_groups[0]["lr"] == expected[0]
    assert lrs(sched2, opt2, range(done + 1, 20 * per_epoch + 1)) == expected[1:]
    assert opt2.param_groups[0]["initial_lr"] == sched2.base_values[0] == 1e-3

    # the old schedule (what resume kept before) would already be lower: its cosine ends at update 50
    old_opt, old_sched, _ = build_optimization(torch.nn.Linear(3, 2), OLD, 512, per_epoch)
    assert lrs(old_sched, old_opt, [done])[0] < expected[0]
