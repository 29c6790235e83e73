"""Caffe import: .prototxt nets and solvers (and .caffemodel weights) to netcfg's files, without Caffe."""
