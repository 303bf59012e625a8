"""clinalign.report"""
