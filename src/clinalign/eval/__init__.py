"""clinalign.eval"""
