"""Stage 6: the Serve application — teacher and student deployments behind the A/B router, or one arm
alone inside the router's own replicas.

    raykd serve --config configs/demo.yaml                      # blocks; prints the URL; Ctrl-C stops
    raykd serve --config configs/demo.yaml serve.student_weight=0.3 serve.port=8001
    serve deploy serving/serve_config.yaml                     # the same app on a running cluster
    serve build serving.app:app -o my_serve_config.yaml

Arms default to RUN/teacher and RUN/<distill.output>; any HF model directory (or a base spec such as
``builtin:teacher``) can be given with ``serve.teacher_model`` / ``serve.student_model``.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path

from ray import serve
from ray.serve import Application, Deployment

from raykd.config import SERVE_ARMS, ConfigError, RaykdConfig, ServeConfig, load_config
from raykd.data.tokens import has_tokenizer
from raykd.launch import parse_stage_args, run_stage
from raykd.models.load import resolve_model, resolve_tokenizer
from raykd.vllm_support import resolve_engine
from serving.deployments import ArmSpec, alone_options, arm_options, replica_actor_options
from serving.router import Router

APP_NAME = "raykd"
REPO = Path(__file__).resolve().parents[1]
BUILTIN_ARMS = ["serve.teacher_model=builtin:teacher", "serve.student_model=builtin:student"]


def arm_dirs(cfg: RaykdConfig) -> dict[str, str]:
    """Arm name → model directory, for the arms ``serve.arms`` deploys; a missing one is a config error
    naming the key to set."""
    s = cfg.serve
    roles = {"teacher": (s.teacher_name, "serve.teacher_model", s.teacher_model or str(cfg.stage_dir("teacher"))),
             "student": (s.student_name, "serve.student_model",
                         s.student_model or str(cfg.stage_dir(cfg.distill.output)))}
    dirs = {}
    for name, key, spec in (roles[role] for role in SERVE_ARMS if role in s.arms):
        path = resolve_model(spec)
        if not (Path(path) / "config.json").exists():
            raise ConfigError(f"'{key}' = {spec}: no HF model directory there (train it first, or point {key} "
                              "at one, e.g. builtin:teacher)")
        dirs[name] = path
    return dirs


def context_length(dirs: dict[str, str], trust_remote_code: bool) -> int:
    """The shortest context of the arms: every request must fit both."""
    from transformers import AutoConfig

    return min(AutoConfig.from_pretrained(d, trust_remote_code=trust_remote_code).max_position_embeddings
               for d in dirs.values())


def build_app(cfg: RaykdConfig) -> Application:
    s = cfg.serve
    s.api_key()  # fails closed here, before any deployment (each router replica checks again)
    dirs = arm_dirs(cfg)
    # Each arm decodes with its own tokenizer; the router encodes prompts with the teacher's (a
    # distilled student shares its vocabulary, which `raykd distill` checks).
    tokenizers = {name: path if has_tokenizer(path) else resolve_tokenizer(cfg.models) for name, path in dirs.items()}
    settings, trust = dataclasses.asdict(s), cfg.models.trust_remote_code
    engine = resolve_engine(s.engine, "serve.engine")
    print(f"[serve] engine: {engine} (serve.engine={s.engine})", flush=True)
    specs = {name: ArmSpec(path, tokenizers[name], engine, name, settings, trust) for name, path in dirs.items()}
    router, arms = ingress(specs, s, engine)
    return router.bind(arms, arm_weights(s, dirs), {name: engine for name in dirs}, next(iter(tokenizers.values())),
                       context_length(dirs, trust), settings, trust)


def ingress(specs: dict[str, ArmSpec], s: ServeConfig,
            engine: str) -> tuple[Deployment, dict[str, ArmSpec | Application]]:
    """The Router deployment and the arms to bind it with: an arm alone is its spec, loaded in the
    Router's own replicas (which take the arm's options); two arms are deployments of their own behind
    a light router."""
    if len(specs) == 1:
        [name] = specs
        return Router.options(**alone_options(name, s, engine)), specs
    router = Router.options(name="router", ray_actor_options=replica_actor_options(0.1), max_ongoing_requests=256)
    return router, {name: spec.deployment(arm_options(name, s, engine)) for name, spec in specs.items()}


def arm_weights(s, dirs: dict[str, str]) -> dict[str, float]:
    """Each deployed arm's share of the alias's traffic: the split, or all of it for an arm alone."""
    if len(dirs) == 1:
        return dict.fromkeys(dirs, 1.0)
    return {s.teacher_name: 1 - s.student_weight, s.student_name: s.student_weight}


def build(args: dict) -> Application:
    """Application builder for ``serve run``/``serve deploy`` (see serving/serve_config.yaml):
    ``args = {"config": path, "overrides": [...]}``; a relative config path is taken from the repo root."""
    config = args.get("config")
    if config and not Path(config).is_absolute() and not Path(config).exists():
        config = REPO / config
    return build_app(load_config(config, list(args.get("overrides", []))))


def __getattr__(name: str) -> Application:
    """``serving.app:app`` (for ``serve build``): the demo config with the built-in base models, built
    on first access only, so importing this module never loads a config."""
    if name == "app":
        return build({"config": "configs/demo.yaml", "overrides": BUILTIN_ARMS})
    raise AttributeError(name)


def start(cfg: RaykdConfig) -> str:
    """Deploy the app on this Ray cluster, bound to serve.host:serve.port; returns its base URL."""
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/")
    return f"http://{cfg.serve.host}:{cfg.serve.port}"


def run(cfg: RaykdConfig) -> dict:
    """``raykd serve``: deploy, print the URL, serve until interrupted, then shut Serve down."""
    url = start(cfg)
    s = cfg.serve
    names = [s.teacher_name if role == "teacher" else s.student_name for role in s.arms]
    split = f"{1 - s.student_weight:.0%}/{s.student_weight:.0%}" if len(names) == 2 else f"{names[0]} alone"
    print(f"[serve] OpenAI-compatible API at {url}/v1 (models: {', '.join(names)}, {s.ab_alias} = {split}); "
          f"stats at {url}/v1/ab/stats; Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("[serve] shutting down", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        serve.shutdown()
    return {"url": url}


SERVE_READS = ("task", "models", "serve")  # the config keys `raykd serve` reads


def main(argv: list[str] | None = None) -> None:
    cfg = parse_stage_args(argv, __doc__.splitlines()[0], SERVE_READS)
    run_stage("serve", run, cfg, precheck=lambda c: c.serve.api_key())  # an unset key fails before Ray starts


if __name__ == "__main__":
    main()
