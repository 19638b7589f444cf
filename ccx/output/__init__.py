"""
Program output: bounded buffers addressed by byte offset, and its delivery to
subscribers at each one's pace.
"""
