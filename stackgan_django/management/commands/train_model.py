"""Train on a dataset only if the data policy accepts it: the policy gate in front of
``python -m generator.train`` (the generator package itself knows nothing of policies)."""

import sys

from django.core.management.base import BaseCommand, CommandError

from stackgan_django.governance import current_policies


class Command(BaseCommand):
    help = ("Run the data policy on --data, then train with the same options as `python -m generator.train` "
            "(see its --help). A dataset the policy refuses is not trained on; the items and rules are listed.")

    def run_from_argv(self, argv):
        # Every argument belongs to the trainer; Django's own parser would reject them.
        try:
            code = self.train(argv[2:])
        except CommandError as exc:
            self.stderr.write(f"error: {exc}")
            sys.exit(exc.returncode)
        sys.exit(code)

    def handle(self, *args, **options):
        return str(self.train(list(args)))

    def train(self, arguments: list[str]) -> int:
        from generator import train

        options, _ = train.build_parser().parse_known_args(arguments)
        try:
            verdict = current_policies().data.check_dataset(options.data)
        except OSError as exc:
            raise CommandError(f"cannot read {options.data}/manifest.jsonl: {exc.strerror or exc}") from exc
        if verdict.denied:
            reasons = "\n".join(f"  {d.rule_id}: {d.message}" for d in verdict.decisions if d.outcome.value == "deny")
            raise CommandError(f"the data policy refuses {options.data}:\n{reasons}")
        self.stdout.write(f"data policy {verdict.policy_version[:12]}: {verdict.items_usable} of {verdict.items_total} "
                          f"items may be trained on ({', '.join(f'{k}: {v}' for k, v in verdict.licences.items())})")
        return train.main(arguments)
