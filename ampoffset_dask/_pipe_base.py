"""A small stand-in for ``lsst.pipe.base.Task``: names, metadata, subtasks, timers.

It keeps LSST's semantics where callers can observe them: hierarchical full names
(``parent.child``), one metadata container per task, a task dictionary shared by the tree
that holds weak references (``getTaskDict`` returns ``{full name: weakref}``, as pipe_base's
does, so our tasks can be subtasks of real ``lsst.pipe.base.Task`` objects and the other
way round), ``getFullMetadata`` keyed by full name with ``.`` replaced by ``:``, and
``timer`` writing start/end times into metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import resource
import time
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

__all__ = ["ConfigurableField", "Struct", "Task", "TaskMetadata"]


class TaskMetadata(dict):
    """Task metadata: a dict whose ``add`` appends (LSST ``TaskMetadata`` semantics)."""

    def add(self, name: str, value: Any) -> None:
        """Append ``value`` under ``name`` (creating a list on first use)."""
        current = self.get(name)
        if current is None:
            self[name] = [value]
        elif isinstance(current, list):
            current.append(value)
        else:
            self[name] = [current, value]

    def getScalar(self, name: str) -> Any:
        """The last value stored under ``name``."""
        value = self[name]
        return value[-1] if isinstance(value, list) else value

    def getArray(self, name: str) -> list:
        """All values stored under ``name``."""
        value = self[name]
        return list(value) if isinstance(value, list) else [value]


class Struct:
    """Attribute bag returned by ``run`` (LSST ``pipe.base.Struct``)."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def getDict(self) -> dict[str, Any]:
        """The attributes as a dict."""
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Struct({', '.join(f'{k}=...' for k in self.__dict__)})"


@dataclasses.dataclass
class ConfigurableField:
    """What ``Task.makeField`` returns: a target task class and its config class."""

    target: type
    doc: str = ""

    @property
    def ConfigClass(self) -> type:
        """The target's config class."""
        return self.target.ConfigClass

    def apply(self, *args: Any, **kwargs: Any) -> Task:
        """Construct the target task."""
        return self.target(*args, **kwargs)


class Task:
    """Base class with LSST ``Task`` semantics (no pipeline machinery).

    Parameters
    ----------
    config : object, optional
        Task configuration; ``ConfigClass()`` when omitted.
    name : str, optional
        Task name; ``_DefaultName`` when omitted.
    parentTask : Task, optional
        Parent for subtasks (full names and the shared task dictionary).
    log : logging.Logger, optional
        Logger; a child of the parent's (or of ``lsst.<name>``) when omitted.
    """

    ConfigClass: ClassVar[type] = dict
    _DefaultName: ClassVar[str] = "task"

    def __init__(
        self,
        config: Any = None,
        *,
        name: str | None = None,
        parentTask: Task | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.metadata = TaskMetadata()
        self._name = name or self._DefaultName
        self._parent = None if parentTask is None else weakref.ref(parentTask)
        if parentTask is not None:
            self._fullName = f"{parentTask._fullName}.{self._name}"
            self._taskDict = parentTask._taskDict
            self.log = log or parentTask.log.getChild(self._name)
        else:
            self._fullName = self._name
            self._taskDict: dict[str, weakref.ReferenceType[Task]] = {}
            self.log = log or logging.getLogger(f"ampoffset_dask.task.{self._name}")
        self.config = self.ConfigClass() if config is None else config
        # Weak references, as pipe_base keeps them: the tree shares one dictionary, and a
        # real pipe_base parent dereferences every value.
        self._taskDict[self._fullName] = weakref.ref(self)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle as pipe_base's tasks do: unpickling makes a new task from the same class,
        config, name and parent (the task dictionary's weak references do not pickle, and
        a task sent to a dask worker must); metadata is not carried over."""
        parent = None if self._parent is None else self._parent()
        return _make_task, (type(self), self.config, self._name, parent)

    def getName(self) -> str:
        """The task's own name."""
        return self._name

    def getFullName(self) -> str:
        """Dotted name from the top-level task (``isrAmpOffset.background``)."""
        return self._fullName

    def getTaskDict(self) -> dict[str, weakref.ReferenceType[Task]]:
        """``{full name: weak reference to the task}`` for this task tree (a shallow copy).

        Call a value to get the task: ``task.getTaskDict()["isrAmpOffset.background"]()``.
        """
        return dict(self._taskDict)

    def _tasks(self) -> Iterator[tuple[str, Any]]:
        for full_name, ref in self._taskDict.items():
            task = ref()
            if task is None:
                raise RuntimeError(f"task {full_name!r} of {self._fullName!r} was garbage "
                                   "collected while its parent is alive")
            yield full_name, task

    def getFullMetadata(self) -> TaskMetadata:
        """Metadata of every task in the tree, keyed by full name with ``:`` for ``.``."""
        full = TaskMetadata()
        for full_name, task in self._tasks():
            full[full_name.replace(".", ":")] = task.metadata
        return full

    def emptyMetadata(self) -> None:
        """Clear the metadata of this task and all its subtasks."""
        for _, task in self._tasks():
            task.metadata = type(task.metadata)()

    @classmethod
    def makeField(cls, doc: str) -> ConfigurableField:
        """A field that configures and retargets to this task class."""
        return ConfigurableField(target=cls, doc=doc)

    def makeSubtask(self, name: str, **keyArgs: Any) -> None:
        """Create subtask ``name`` from ``self.config.<name>`` and store it as ``self.<name>``."""
        target = self._subtasks().get(name)
        if target is None:
            raise KeyError(f"{type(self).__name__} has no subtask {name!r}")
        subtask = target(config=getattr(self.config, name), name=name, parentTask=self,
                         **keyArgs)
        setattr(self, name, subtask)

    @classmethod
    def _subtasks(cls) -> dict[str, type[Task]]:
        return {}

    @contextlib.contextmanager
    def timer(self, name: str, logLevel: int = logging.DEBUG) -> Iterator[None]:
        """Record ``<name>Start*``/``<name>End*`` times and resource use into metadata."""
        self._record_times(f"{name}Start")
        try:
            yield
        finally:
            self._record_times(f"{name}End")
            self.log.log(logLevel, "%s: %s done", self._fullName, name)

    def _record_times(self, prefix: str) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        now = datetime.datetime.now(datetime.UTC)
        self.metadata.add(f"{prefix}Utc", now.isoformat())
        self.metadata.add(f"{prefix}CpuTime", time.process_time())
        self.metadata.add(f"{prefix}UserTime", usage.ru_utime)
        self.metadata.add(f"{prefix}SystemTime", usage.ru_stime)
        self.metadata.add(f"{prefix}MaxResidentSet", usage.ru_maxrss)


def _make_task(cls: type[Task], config: Any, name: str, parentTask: Any) -> Task:
    """A task from what `Task.__reduce__` recorded."""
    return cls(config, name=name, parentTask=parentTask)
