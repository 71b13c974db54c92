"""The main window's controllers: each owns one part of the app's behaviour (opening, saving,
segmenting, annotating, drawing) and works on the window's shared state and widgets; the window
composes them and lays out the widgets."""
