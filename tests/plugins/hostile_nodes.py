"""The hostile test connectors, named, as a plugin a hub can load (tests/test_escape_nodes.py)."""

from hub.sdk import hookimpl
from tests.sandbox import hostile


class Spin(hostile.Spin):
    name = "hostile-spin"


class Sleep(hostile.Sleep):
    name = "hostile-sleep"


class Hog(hostile.Hog):
    name = "hostile-hog"


class ForkBomb(hostile.ForkBomb):
    name = "hostile-forkbomb"


class Snoop(hostile.Snoop):
    name = "hostile-snoop"


class Connect(hostile.Connect):
    name = "hostile-connect"


class BigFile(hostile.BigFile):
    name = "hostile-bigfile"


class Shout(hostile.Shout):
    name = "hostile-shout"


class Huge(hostile.Huge):
    name = "hostile-huge"


class Segfault(hostile.Segfault):
    name = "hostile-segfault"


@hookimpl
def hookhub_connectors():
    return [Spin, Sleep, Hog, ForkBomb, Snoop, Connect, BigFile, Shout, Huge, Segfault]
