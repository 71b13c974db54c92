"""The annotation document and its files, without Qt: the project (images, boxes, results,
accepted masks, undo), box-file readers, the annotation file, exporters, crash recovery and the
batch run of ``hcviewer predict``. The Qt app (``hcviewer.app``) is a view over it."""
