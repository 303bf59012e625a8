"""clinalign.data"""
