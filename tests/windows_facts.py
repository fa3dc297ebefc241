"""What the tests ask Windows itself (run under Windows Python only): whether this "Windows" is Wine, and who a
file's access control list lets in. POSIX modes mean nothing there: privacy is the ACL's job."""

from __future__ import annotations

import ctypes
import re
import sys
from pathlib import Path

SE_FILE_OBJECT = 1
DACL_SECURITY_INFORMATION = 0x4
SDDL_REVISION_1 = 1
OTHERS = {"WD": "Everyone", "BU": "Users", "AU": "Authenticated Users", "BG": "Guests", "AN": "Anonymous"}
"""SDDL's names of the groups that take in other people."""


def running_under_wine() -> bool:
    """Wine's ntdll exports wine_get_version; Windows' does not."""
    if sys.platform != "win32":
        return False
    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")  # type: ignore[attr-defined]


def dacl_sddl(path: Path | str) -> str:
    """The file's DACL in SDDL, e.g. 'D:AI(A;ID;FA;;;SY)(A;ID;FA;;;S-1-5-21-...)'."""
    from ctypes import wintypes

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    advapi32.GetNamedSecurityInfoW.argtypes = [wintypes.LPCWSTR, ctypes.c_int, wintypes.DWORD, ctypes.c_void_p,
                                               ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                               ctypes.POINTER(ctypes.c_void_p)]
    advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW.argtypes = [
        ctypes.c_void_p, wintypes.DWORD, wintypes.DWORD, ctypes.POINTER(wintypes.LPWSTR), ctypes.c_void_p]
    kernel32.LocalFree.argtypes = [ctypes.c_void_p]
    descriptor = ctypes.c_void_p()
    error = advapi32.GetNamedSecurityInfoW(str(path), SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, None, None, None,
                                           None, ctypes.byref(descriptor))
    if error:
        raise OSError(error, f"GetNamedSecurityInfoW failed for {path}")
    text = wintypes.LPWSTR()
    try:
        if not advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW(
                descriptor, SDDL_REVISION_1, DACL_SECURITY_INFORMATION, ctypes.byref(text), None):
            raise OSError(ctypes.get_last_error(), "ConvertSecurityDescriptorToStringSecurityDescriptorW failed")  # type: ignore[attr-defined]
        return text.value or ""
    finally:
        kernel32.LocalFree(text)
        kernel32.LocalFree(descriptor)


def others_allowed(path: Path | str) -> list[str]:
    """The groups of other people that the file's DACL allows in (empty: private to its owner, SYSTEM and
    Administrators, as files under the user's AppData are)."""
    allowed = re.findall(r"\(A;[^;]*;[^;]*;[^;]*;[^;]*;([^)]+)\)", dacl_sddl(path))
    return sorted(OTHERS[sid] for sid in allowed if sid in OTHERS)
