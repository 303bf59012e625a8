"""clinalign.train"""
