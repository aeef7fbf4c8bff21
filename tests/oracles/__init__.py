"""Independent statements of what the engine computes, used only by the tests."""
