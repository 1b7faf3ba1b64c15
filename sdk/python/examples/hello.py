#!/usr/bin/env python3
# Hello-world taskd worker. Config: command: ["python3", "sdk/python/examples/hello.py"]
import os, sys
# this checkout's SDK (taskd gives workers no PYTHONPATH); installed with
# `pip install ./sdk/python`, the import needs no path
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from taskd_worker import Worker

w = Worker()

@w.method("hello")
def hello(ctx, name="world"):
    ctx.log.info("greeting", name=name)
    return "hello, %s" % name

w.run()
