"""
The contracts between a process's output and whoever reads it.
"""

from zope.interface import Attribute, Interface


class IOutputSink(Interface):
    """
    Where one subscriber's notifications go: in ccx, a client connection.
    """

    writable = Attribute(
        "True while the sink can take more output; its consumer turns it "
        "False (pauseProducing) when it cannot."
    )

    def send_notification(method: str, params: dict) -> None:
        """
        Send one notification to the subscriber.
        """


class IReadControl(Interface):
    """
    The upstream end of back-pressure: stops and restarts reading a
    program's pipes (a process transport's pause/resumeProducing).
    """

    def pauseProducing() -> None:
        """
        Stop reading the program's output.
        """

    def resumeProducing() -> None:
        """
        Read the program's output again.
        """
