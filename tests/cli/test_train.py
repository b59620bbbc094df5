"""`seedlings train`: flags reach the resolved settings (tests/cli/test_flags.py checks flags against fields)."""

from __future__ import annotations


def test_every_train_flag_reaches_the_config(monkeypatch):
    """Each `seedlings train` flag ends up in the resolved settings (a flag the CLI forgot would be ignored)."""
    import seedlings.training.fit as fit
    from seedlings.cli import main
    from seedlings.config import resolve

    seen = {}
    monkeypatch.setattr(fit, "train_from_cli", lambda config, overrides, resume: seen.update(
        cfg=resolve(config, overrides)))
    main(["train", "--data", "d", "--out", "o", "--mixup", "0.2", "--cutmix", "1.0", "--drop-path", "0.1",
          "--seed", "3", "--split-seed", "0", "--epochs", "5", "--threads", "1", "--no-ema", "--balance", "sampler"])
    cfg = seen["cfg"]
    assert (cfg.mixup, cfg.cutmix, cfg.drop_path, cfg.seed, cfg.split_seed, cfg.epochs, cfg.threads, cfg.ema,
            cfg.balance) == (0.2, 1.0, 0.1, 3, 0, 5, 1, False, "sampler")
