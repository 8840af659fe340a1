"""What the notebooks and the command line show: plain-data views of a Session, tables, exports and
the widgets."""
