"""Runner domain errors; the servicekit interceptor maps them to gRPC status codes."""

from agentry.servicekit.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable


class ThreadNotFound(NotFound):
    code = "thread_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class RunAlreadyActive(FailedPrecondition):
    code = "run_active"


class InvalidInput(InvalidArgument):
    code = "invalid_argument"


class RunQueueUnavailable(Unavailable):
    code = "queue_unavailable"


class LeaseLost(Exception):
    """This worker no longer holds the run's lease (another worker took it over, or the run
    ended): it must stop driving the run and write nothing more for it. Not a client error."""
