"""
Refresh Twisted's plugin cache after installing ccx.

C{pip install} writes C{twisted/plugins/ccx_plugin.py} but not Twisted's
C{dropin.cache}; the first C{twistd} run would then try to rewrite it, which
fails noisily when site-packages is not writable by the service's user.  Run
C{python -m ccx.plugincache} once, as the user who installed ccx.
"""

from twisted.plugin import IPlugin, getPlugins


def main() -> None:
    names = sorted(getattr(plugin, "tapname", "") for plugin in getPlugins(IPlugin))
    if "ccx" not in names:
        raise SystemExit("the ccx twistd plugin was not found: is ccx installed here?")


if __name__ == "__main__":
    main()
