"""`scripts/migrate`: from the original TKE add-on to this chart, with no failed pull (dry run by default)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from . import cluster
from . import plan as p

REPO_ROOT = Path(__file__).resolve().parents[2]
EXIT_REFUSED = 3
EXIT_FAILED = 1

DESCRIPTION = """\
Hand an install of the original TKE "TCR Addon" (same object names: CRD imagepullsecrets,
tcr-assistant-* objects in tcr-assistant-system, hosts-updater) to this chart's Helm release, so
that a plain `helm install` succeeds, with no failed pull and no refused write on the way.

Without --apply it only shows what exists, who owns it and what it would do (dry run).
Run it three times:
  1. scripts/migrate -f values.yaml                see the plan
  2. scripts/migrate -f values.yaml --apply        prepare: objects handed to the release, old controller
                                                   kept running (its Pods, not its Deployment), the
                                                   new controller's leader Lease held for it
     helm install tcr-addon ./chart -n tcr-assistant-system -f values.yaml --wait
  3. scripts/migrate -f values.yaml --apply        finish: stop the old controller, let the new one lead
Then, to hand your ImagePullSecrets to the chart's values (optional; leave them out of values.yaml
until here, the original would not understand the chart's passwordSecretRef):
  scripts/values --from-cluster -o values-full.yaml
  scripts/migrate -f values-full.yaml --apply  each password moves into the chart's credentials Secret
  helm upgrade tcr-addon ./chart -n tcr-assistant-system -f values-full.yaml
Each run reads the cluster afresh; running it again does nothing twice.

Reads the cluster of KUBECONFIG (or ~/.kube/config), as kubectl does.
Exit status: 0 done (or nothing to do), 1 a step failed, 2 usage, 3 refused (the reasons are printed).
"""


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/migrate", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apply", action="store_true", help="carry out the plan's next phase (default: dry run)")
    parser.add_argument("-f", "--values", metavar="FILE", action="append", type=Path, default=[],
                        help="values you will give helm (repeatable): they decide which objects the release "
                             "owns")
    parser.add_argument("--chart", metavar="PATH", type=Path, default=REPO_ROOT / "chart",
                        help="the chart you will install: a directory or a .tgz (default: this repository's chart/)")
    parser.add_argument("--release", default="tcr-addon", help="Helm release name (default: tcr-addon)")
    parser.add_argument("-n", "--namespace", default="tcr-assistant-system",
                        help="release namespace, the original's (default: tcr-assistant-system)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="seconds to wait for a deletion, for Kubernetes' EndpointSlices or for the old "
                             "controller's Pods to stop (default: 300)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="how to print the plan")
    return parser.parse_args(argv)


def as_json(plan: p.Plan) -> str:
    return json.dumps({
        "phase": plan.phase.name.lower(), "phaseText": plan.phase.value,
        "objects": [{"object": o, "state": s, "action": a} for o, s, a in plan.objects],
        "actions": [{"do": a.do.name.lower(), "object": str(a.ref) if a.ref else None, "detail": a.detail,
                     "text": a.describe()} for a in plan.actions],
        "refusals": list(plan.refusals), "notes": list(plan.notes)}, indent=2)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from values_wizard.helm import Failure, find_helm

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        helm = find_helm()
        kube = cluster.Cluster(cluster.connect(args.context))
        rendered = cluster.render(helm, args.chart, args.release, args.namespace, args.values, kube.server_version())
        inventory = kube.inventory(args.release, args.namespace, rendered)
        plan = p.plan(inventory)
        if args.output == "json":
            print(as_json(plan))
        else:
            for line in p.summary(plan):
                say(line)
        if plan.phase is p.Phase.REFUSED:
            return EXIT_REFUSED
        if not args.apply:
            if plan.actions and args.output == "text":
                say("dry run: nothing changed; run again with --apply")
            return 0
        if not plan.actions:
            return 0
        kube.apply(plan, inventory, say if args.output == "text" else lambda _: None, args.timeout)
        after = p.plan(kube.inventory(args.release, args.namespace, rendered))
        if args.output == "text":
            say(f"now: {after.phase.value}")
        return 0
    except (Failure, cluster.MigrationError) as exc:
        print(f"scripts/migrate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConfigException as exc:
        print(f"scripts/migrate: no cluster to talk to: {exc} (set KUBECONFIG)", file=sys.stderr)
        return EXIT_FAILED
    except ApiException as exc:
        print(f"scripts/migrate: the API server answered {exc.status} {exc.reason}: {str(exc.body)[:400]}",
              file=sys.stderr)
        return EXIT_FAILED
