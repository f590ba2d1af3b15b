import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from billing_site.schedules import ensure_schedules

STOP_TIMEOUT_SECONDS = 15


class Command(BaseCommand):
    help = "Serve the API and admin (gunicorn) and run the background worker (django-q2) until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--workers", type=int, default=settings.WEB_CONCURRENCY)
        parser.add_argument("--threads", type=int, default=settings.WEB_THREADS)
        parser.add_argument("--no-worker", action="store_true", help="Serve HTTP only, without django-q2.")

    def handle(self, *args, host, port, workers, threads, no_worker, **options):
        ensure_schedules()
        web = [
            sys.executable,
            "-m",
            "gunicorn",
            "billing_site.wsgi:application",
            "--bind",
            f"{host}:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "billing_site.server.Worker",
            "--timeout",
            "60",
            "--graceful-timeout",
            "10",
            "--access-logfile",
            "-",
        ]
        commands = {"web": web}
        if not no_worker:
            commands["worker"] = [sys.executable, "manage.py", "qcluster"]
        # Each child gets its own session, so a Ctrl-C reaches only this process, which then
        # stops the children in order, instead of every process handling the signal on its own.
        children = {
            name: subprocess.Popen(command, cwd=settings.BASE_DIR, start_new_session=True)  # noqa: S603
            for name, command in commands.items()
        }
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(
            f"Serving on http://{host}:{port}/ (API /v1/, admin /admin/, docs /docs/). Ctrl-C stops."
        )

        exit_code = 0
        while not stopping:
            exited = [name for name, child in children.items() if child.poll() is not None]
            if exited:
                self.stderr.write(f"{', '.join(exited)} exited; stopping the rest.")
                exit_code = 1
                break
            time.sleep(0.5)

        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stdout.write("Stopped.")
        sys.exit(exit_code)
