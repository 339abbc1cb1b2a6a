// The plane description of VFIO's QUERY_GFX_PLANE (vfio_device_gfx_plane_info),
// and the pixel formats we decode.

/** DRM fourcc codes. */
export const DrmFormat = {
  XRGB8888: 0x34325258, // 'XR24': bytes B, G, R, X in memory
  BGRX8888: 0x34325842, // 'BX24': bytes X, R, G, B
  RGB565: 0x36314752, // 'RG16': 16-bit little-endian, R in the top 5 bits
  RGB888: 0x34324752, // 'RG24': bytes B, G, R
} as const;

export const PlaneType = { OVERLAY: 0, PRIMARY: 1, CURSOR: 2 } as const;
export const PLANE_FLAG_PROBE = 1;
export const PLANE_FLAG_DMABUF = 2;
export const PLANE_FLAG_REGION = 4;

export interface PlaneInfo {
  drm_plane_type: number;
  /** 0 when the guest shows nothing. */
  drm_format: number;
  drm_format_mod: number;
  width: number;
  height: number;
  /** Bytes per line. */
  stride: number;
  /** Bytes the plane spans: stride × height. */
  size: number;
  x_pos: number;
  y_pos: number;
  x_hot: number;
  y_hot: number;
  /** Stable id of this plane description (the dmabuf_id of VFIO); 0 when there is no plane. */
  dmabuf_id: number;
  /** Offset of the first pixel inside the device's framebuffer memory (not in the VFIO struct; needed to export). */
  offset: number;
}

export const NO_HOTSPOT = 0xffffffff;

export function bytesPerPixel(format: number): number {
  switch (format) {
    case DrmFormat.XRGB8888:
    case DrmFormat.BGRX8888:
      return 4;
    case DrmFormat.RGB888:
      return 3;
    case DrmFormat.RGB565:
      return 2;
    default:
      return 0;
  }
}

export function formatName(format: number): string {
  for (const [k, v] of Object.entries(DrmFormat)) if (v === format) return k;
  return format === 0 ? 'none' : `0x${format.toString(16)}`;
}

export function emptyPlane(type: number): PlaneInfo {
  return {
    drm_plane_type: type,
    drm_format: 0,
    drm_format_mod: 0,
    width: 0,
    height: 0,
    stride: 0,
    size: 0,
    x_pos: 0,
    y_pos: 0,
    x_hot: NO_HOTSPOT,
    y_hot: NO_HOTSPOT,
    dmabuf_id: 0,
    offset: 0,
  };
}

/** Memory a display source scans out from, shareable by fd. */
export interface Framebuffer {
  readonly fd: number;
  readonly bytes: Uint8Array;
}

/**
 * What a display device offers its consumers: the userspace form of
 * QUERY_GFX_PLANE + GET_GFX_DMABUF. Implemented by devices, consumed by
 * screenshots, VNC and the management socket.
 */
export interface DisplaySource {
  /** Decodes the plane from device state now; a disabled plane has format 0. */
  queryPlane(type: number): PlaneInfo;
  /** The memory planes live in. */
  readonly framebuffer: Framebuffer;
  /** Listen for plane changes (mode set, flip, disable). */
  onPlaneChange(listener: (plane: PlaneInfo) => void): () => void;
}
