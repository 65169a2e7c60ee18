"""The recipe runner's one error: a stage that cannot start or did not finish, in one line."""


class StageError(RuntimeError):
    pass
