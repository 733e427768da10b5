
c
XY"Softmax2