"""The model as layers: the graph and its tensor specs, the ops, and the rewrite passes."""
