from django.core.management.base import OutputWrapper


class ProgressLine:
    """`  12/40` rewritten in place on a terminal; silent when output is not a terminal."""

    def __init__(self, out: OutputWrapper, total: int) -> None:
        self.out, self.total, self.done = out, total, 0
        self.enabled = out.isatty()

    def __call__(self, *_: object) -> None:
        self.done += 1
        if self.enabled:
            self.out.write(f"\r  {self.done}/{self.total}", ending="")
            self.out.flush()

    def close(self) -> None:
        if self.enabled and self.done:
            self.out.write("")
