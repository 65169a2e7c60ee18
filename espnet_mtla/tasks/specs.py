"""The task table under its 2026-11 path; it lives in ``espnet_mtla.task_specs`` (importing this
package registers our classes in ESPnet, which the task table itself must not need)."""

from espnet_mtla.task_specs import LM_TASK, TASKS, TaskSpec, get_task  # noqa: F401
