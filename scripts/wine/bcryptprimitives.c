/* bcryptprimitives.dll for Wine 8.0, which lacks it.
 *
 * Rust's standard library (1.78 and later) draws random bytes from ProcessPrng in bcryptprimitives.dll, so every
 * Rust-built wheel (pydantic-core, tokenizers, safetensors, rpds-py) fails to import under Wine 8.0 with
 * "bcryptprimitives.dll not found". Real Windows 10 and 11 have the DLL. This stand-in forwards to
 * RtlGenRandom (advapi32's SystemFunction036), the generator Wine does implement, in chunks it accepts.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
