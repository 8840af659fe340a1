"""Running a plan: the interpreter, the compiled executor and its memory plan, threads and the CPU."""
