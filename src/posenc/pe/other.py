"""(family module; filled in by the implementations work)"""
