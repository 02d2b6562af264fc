"""Widgets: the interactive controls of a notebook (ipywidgets).

The approval button of a plan, a rollout's progress bar, and the pickers for
environment and service. Headless runs (papermill, ``runbooks run``) show no
control: parameters decide there, and a rollout prints one line per change.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from runbooks.model import headless


def _display(obj: Any) -> None:
    from IPython.display import display

    display(obj)


def rollout_progress(title: str = "Rollout") -> Any:
    """A progress display for a rollout: returns ``callback(status)`` for ``deploy.apply_release``.

    ``status`` is a ``deploy.rollout_status`` dict (desired, updated, ready,
    available, complete, reason, seconds). Interactively a progress bar
    follows the available pods; headless (the executed notebook, the report)
    one line is printed each time the counts change, so the record stays short.
    """

    last: list[tuple[Any, ...]] = []
    bar: dict[str, Any] = {}

    def line(s: Mapping[str, Any]) -> str:
        state = "complete" if s.get("complete") else (s.get("reason") or "progressing")
        return (f"{title}: {s.get('available', 0)}/{s.get('desired', 0)} available, "
                f"{s.get('updated', 0)} updated, {s.get('ready', 0)} ready — {state} "
                f"({s.get('seconds', 0):.0f}s)")

    def callback(s: Mapping[str, Any]) -> None:
        key = (s.get("desired"), s.get("updated"), s.get("ready"), s.get("available"), s.get("complete"))
        if headless():
            if not last or last[-1] != key:
                print(line(s))
            last.append(key)
            return
        import ipywidgets as widgets

        if not bar:
            bar["progress"] = widgets.IntProgress(min=0, max=max(1, int(s.get("desired") or 1)),
                                                  description=title, layout=widgets.Layout(width="50%"))
            bar["label"] = widgets.Label()
            _display(widgets.VBox([bar["progress"], bar["label"]]))
        bar["progress"].max = max(1, int(s.get("desired") or 1))
        bar["progress"].value = min(int(s.get("available") or 0), bar["progress"].max)
        bar["progress"].bar_style = "success" if s.get("complete") else ""
        bar["label"].value = line(s)
        last.append(key)

    return callback


def approval_button(plan: Any, apply: Any, label: str = "Apply plan") -> None:
    """A button naming the plan id; clicking it calls ``apply()`` once and prints the outcome.

    For plans that are not applied through ``Run.apply`` (a Helm release): the
    caller keeps the approval rules (``deploy.apply_release``).
    """
    import ipywidgets as widgets

    button = widgets.Button(description=f"{label} {plan.id}", button_style="danger",
                            tooltip=f"Apply the {len(plan.changes)} change(s) of plan {plan.id}",
                            layout=widgets.Layout(width="auto"))
    out = widgets.Output()

    def on_click(_: Any) -> None:
        button.disabled = True
        with out:
            try:
                result = apply()
                print(f"Applied plan {plan.id}: {result}")
            except Exception as exc:  # shown to the person who clicked; nothing more is applied
                print(f"Plan {plan.id} was not applied: {type(exc).__name__}: {exc}")

    button.on_click(on_click)
    _display(widgets.VBox([button, out]))


def service_picker(run: Any, choices: Mapping[str, Sequence[str]]) -> None:
    """Interactive only: pick namespace and workload; the cells below read `run.params`.

    Headless runs (papermill, `runbooks run`) show nothing: the parameters decide.
    """

    if headless() or not choices:
        return
    import ipywidgets as widgets
    from IPython.display import display

    params = run.params
    namespaces = sorted(choices)
    ns = widgets.Dropdown(options=namespaces, value=params.namespace if params.namespace in choices
                          else namespaces[0], description="namespace")
    svc = widgets.Dropdown(options=list(choices[ns.value]), description="workload")
    if params.service in choices[ns.value]:
        svc.value = params.service
    note = widgets.HTML()

    def update(_: Any = None) -> None:
        if svc.value:
            run.params = run.params.model_copy(update={"namespace": ns.value, "service": svc.value})
            note.value = f"Investigating <b>{ns.value}/{svc.value}</b>: run the cells below."

    def on_namespace(_: Any) -> None:
        svc.options = list(choices[ns.value])
        update()

    ns.observe(on_namespace, names="value")
    svc.observe(update, names="value")
    update()
    display(widgets.VBox([widgets.HBox([ns, svc]), note]))


def env_picker(env: str | None, envs: Sequence[str], context: str | None,
               namespace: dict[str, Any]) -> None:
    """Interactive only: the environment this notebook runs against, and a menu to switch.

    Switching sets the notebook's ``env`` variable; running the cells again from
    Preflight connects to the chosen environment (``parameters/<env>/``).
    """
    if headless():
        return
    import ipywidgets as widgets

    options = list(envs) if env in envs else [*envs, env]
    picker = widgets.Dropdown(options=options, value=env, description="environment")
    note = widgets.HTML()

    def describe(chosen: str | None) -> None:
        if chosen == env:
            where = f" (kube context <b>{html.escape(str(context))}</b>)" if context else ""
            note.value = f"Running against environment <b>{html.escape(str(env))}</b>{where}."
        else:
            note.value = (f"Environment <b>{html.escape(str(chosen))}</b> selected: run the cells again "
                          "from Preflight to connect to it.")

    def on_change(change: Any) -> None:
        namespace["env"] = change["new"]
        describe(change["new"])

    picker.observe(on_change, names="value")
    describe(env)
    _display(widgets.HBox([picker, note]))
